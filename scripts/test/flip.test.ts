import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import YAML from 'yaml';
import { UsageError } from '../src/cli.ts';
import { command as flip } from '../src/commands/flip.ts';

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

async function run(args: Record<string, string | string[] | boolean>) {
  vi.spyOn(console, 'log').mockImplementation(() => {});
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
