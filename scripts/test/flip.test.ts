import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import YAML from 'yaml';
import { UsageError } from '../src/cli.ts';
import { command as flip } from '../src/commands/flip.ts';
import { command as routesCommand } from '../src/commands/routes.ts';

const dir = await mkdtemp(path.join(os.tmpdir(), 'strangler-flip-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

const table = `upstreams:
  monolith: { url: http://127.0.0.1:3000 }
  notification: { url: http://127.0.0.1:3104, dryRun: true }
routes:
  - id: notifications.send
    match: { method: POST, path: /api/notifications }
    effects: unsafe
    serve: monolith
default: monolith
`;

async function routeFile(): Promise<string> {
  const file = path.join(dir, `routes-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, table);
  return file;
}

async function run(args: Record<string, string | string[] | boolean>, logged: string[] = []) {
  vi.spyOn(console, 'log').mockImplementation((line: string) => void logged.push(line));
  const token = process.env.STRANGLER_ADMIN_TOKEN;
  delete process.env.STRANGLER_ADMIN_TOKEN; // edit the file, never a facade that may run here
  try {
    return await flip.run({ positionals: ['notifications.send'], values: args });
  } finally {
    if (token !== undefined) process.env.STRANGLER_ADMIN_TOKEN = token;
    vi.restoreAllMocks();
  }
}

describe('strangler flip --shadow --ignore', () => {
  it('writes the ignored JSON paths into the route, from repeated and comma-separated flags', async () => {
    const routes = await routeFile();
    expect(await run({ shadow: 'notification', ignore: ['$.id,$.createdAt', ' $.updatedAt'], why: 'parity check (dry run)', routes })).toBe(0);
    const route = (YAML.parse(await readFile(routes, 'utf8')) as { routes: Array<{ shadow?: unknown }> }).routes[0]!;
    expect(route.shadow).toMatchObject({ to: 'notification', percent: 100, ignore: ['$.id', '$.createdAt', '$.updatedAt'] });
  });

  it('refuses --ignore without --shadow, and a path that is not a JSON path, changing nothing', async () => {
    const routes = await routeFile();
    await expect(run({ serve: 'notification', ignore: ['$.id'], why: 'parity check', routes })).rejects.toThrow(UsageError);
    await expect(run({ shadow: 'notification', ignore: ['id[oops'], why: 'parity check', routes })).rejects.toThrow(/ignore/);
    expect(await readFile(routes, 'utf8')).toBe(table);
  });
});

describe('strangler flip through the runbook (MIGRATION.md 6 to 8)', () => {
  const auditOf = async (routes: string) => (await readFile(routes.replace(/\.yaml$/, '.audit.jsonl'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
  const routeOf = async (routes: string) => (YAML.parse(await readFile(routes, 'utf8')) as { routes: Array<Record<string, unknown>> }).routes[0]!;

  it('shadow, canary, then serve: the cut-over ends the shadow and canary to the new server', async () => {
    const routes = await routeFile();
    const logged: string[] = [];
    expect(await run({ shadow: 'notification', why: 'parity check', routes })).toBe(0);
    expect(await run({ canary: 'notification', percent: '50', why: 'canary', routes })).toBe(0);
    expect(await run({ serve: 'notification', why: 'cut over', routes }, logged)).toBe(0);
    const route = await routeOf(routes);
    expect(route.serve).toBe('notification');
    expect(route).not.toHaveProperty('shadow');
    expect(route).not.toHaveProperty('canary');
    expect(logged).toContain('  shadow to notification ended: it now serves the route');
    expect(logged).toContain('  canary to notification ended: it now serves the route');
    const last = JSON.parse((await auditOf(routes)).at(-1)!) as { before: Record<string, unknown>; after: Record<string, unknown> };
    expect(last.before).toMatchObject({ serve: 'monolith', shadow: { to: 'notification' }, canary: { to: 'notification', percent: 50 } });
    expect(last.after).toMatchObject({ serve: 'notification' });
    // Roll back: the monolith serves again.
    expect(await run({ serve: 'monolith', why: 'rollback: test', routes })).toBe(0);
    expect((await routeOf(routes)).serve).toBe('monolith');
  });

  it('a flip that changes nothing writes nothing and audits nothing', async () => {
    const routes = await routeFile();
    expect(await run({ serve: 'monolith', why: 'already so', routes })).toBe(0);
    expect(await readFile(routes, 'utf8')).toBe(table);
    expect(await auditOf(routes)).toEqual([]);
  });

  it('rolling back with --serve monolith during a canary says the canary still sends traffic, and --off-canary ends it', async () => {
    const routes = await routeFile();
    expect(await run({ canary: 'notification', percent: '50', why: 'canary', routes })).toBe(0);
    const logged: string[] = [];
    expect(await run({ serve: 'monolith', why: 'rollback: errors', routes }, logged)).toBe(0);
    expect(logged).toContain('  note: its canary still sends 50% of requests to notification; add --off-canary to end it');
    expect(await run({ 'off-canary': true, why: 'rollback: errors', routes })).toBe(0);
    expect(await routeOf(routes)).not.toHaveProperty('canary');
  });

  it('refuses, as a usage error, a flip that would make the table invalid', async () => {
    const routes = await routeFile();
    await run({ shadow: 'notification', why: 'parity check', routes });
    const before = await readFile(routes, 'utf8');
    // Shadowing to the monolith, which serves the route.
    await expect(run({ shadow: 'monolith', why: 'oops', routes })).rejects.toThrow(UsageError);
    await expect(run({ shadow: 'monolith', why: 'oops', routes })).rejects.toThrow(/That flip would make .* invalid; nothing was changed/);
    expect(await readFile(routes, 'utf8')).toBe(before);
    // So is a route that does not exist.
    await expect(flip.run({ positionals: ['no.such.route'], values: { serve: 'monolith', why: 'oops', routes } })).rejects.toThrow(UsageError);
  });

  it('on a route file that is already invalid, says what is wrong with it (not that the route is missing) and changes nothing', async () => {
    for (const [text, problem] of [
      ['routes: [unclosed', /not a valid route table[\s\S]*nothing was changed[\s\S]*\n {2}- not valid YAML at line 1/],
      ['{"upstreams": {}}', /not a valid route table[\s\S]*\n {2}- field "upstreams": declare at least one upstream/],
    ] as const) {
      const routes = path.join(dir, `broken-${Math.random().toString(36).slice(2)}.yaml`);
      await writeFile(routes, text);
      const error = await run({ serve: 'notification', why: 'cut over', routes }).catch((e: Error) => e);
      expect(error).toBeInstanceOf(UsageError);
      expect((error as Error).message).toMatch(problem);
      expect((error as Error).message).not.toMatch(/No route with id/);
      expect(await readFile(routes, 'utf8')).toBe(text);
    }
  });

  it('says a --why that is given but too short is too short, not missing', async () => {
    const routes = await routeFile();
    await expect(run({ serve: 'notification', why: 'x', routes })).rejects.toThrow(/--why "x" is too short: say why in a few words \(at least 3 characters\)/);
    await expect(run({ serve: 'notification', routes })).rejects.toThrow(/--why "<reason>" is required/);
  });

  it('routes --routes lists the file\'s routes without stats, which only a running facade has', async () => {
    const routes = await routeFile();
    await run({ canary: 'notification', percent: '5', why: 'canary', routes });
    const printed: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((line: string) => void printed.push(line));
    try {
      expect(await routesCommand.run({ positionals: [], values: { routes } })).toBe(0);
      expect(await routesCommand.run({ positionals: [], values: { routes, json: true } })).toBe(0);
    } finally {
      vi.restoreAllMocks();
    }
    const [header, row] = printed[0]!.split('\n');
    expect(header!.split(/\s+/)).toEqual(['ROUTE', 'MATCH', 'EFFECTS', 'SERVE', 'CANARY', 'SHADOW']);
    expect(row).toMatch(/^notifications\.send\s+POST \/api\/notifications\s+unsafe\s+monolith\s+notification 5%\s+-$/);
    const listed = JSON.parse(printed[1]!) as Array<Record<string, unknown>>;
    expect(listed).toEqual([expect.objectContaining({ id: 'notifications.send', serve: 'monolith', canary: expect.objectContaining({ to: 'notification', percent: 5 }) })]);
    expect(listed[0]).not.toHaveProperty('stats');
  });
});
