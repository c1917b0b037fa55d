import { execFileSync } from 'node:child_process';
import { chmod, mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import supertest from 'supertest';
import { beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { applyRoutePatch, createAdminApi, createFacade, flipRoute, listenFacade, writeFileAtomic } from '../src/index.ts';
import { startFacade, startUpstream, teardown, tempDir } from './helpers.ts';

const TOKEN = 'admin-secret-for-tests-0123456789';

const fileText = (monolith: string, notification: string) => `# write-back tests
upstreams:
  monolith:     { url: ${monolith} }
  notification: { url: ${notification}, dryRun: true }
routes:
  - id: notifications.send
    match: { method: POST, path: /api/notifications }
    effects: unsafe
    serve: monolith
  - id: notifications.get
    match: { method: GET, path: /api/notifications/:id }
    effects: read
    serve: monolith
default: monolith
`;

type Route = { id: string; serve: string; shadow?: { to: string } };
const routesIn = async (file: string): Promise<Record<string, Route>> =>
  Object.fromEntries((YAML.parse(await readFile(file, 'utf8')) as { routes: Route[] }).routes.map((r) => [r.id, r]));

const auditLines = async (file: string): Promise<unknown[]> => {
  try {
    return (await readFile(file, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as unknown);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
};

const canWrite = async (dir: string) => {
  const probe = path.join(dir, '.probe');
  try {
    await writeFile(probe, '');
    await rm(probe);
    return true;
  } catch {
    return false;
  }
};

/**
 * Makes `dir` unwritable: read-only permissions, or for root (which ignores them) the immutable
 * attribute. Returns the undo, or null when neither works here (the test is then skipped).
 */
async function makeUnwritable(dir: string): Promise<(() => Promise<void>) | null> {
  await chmod(dir, 0o555);
  if (!(await canWrite(dir))) return () => chmod(dir, 0o755);
  try {
    execFileSync('chattr', ['+i', dir], { stdio: 'ignore' });
  } catch {
    // no chattr, or a file system without the attribute
  }
  if (!(await canWrite(dir))) {
    return async () => {
      execFileSync('chattr', ['-i', dir], { stdio: 'ignore' });
      await chmod(dir, 0o755);
    };
  }
  await chmod(dir, 0o755);
  return null;
}

/** Holds the route file's lock the way another writer (a flip, the facade's write-back) does. */
async function holdLock(file: string): Promise<() => Promise<void>> {
  const handle = await open(`${file}.lock`, 'wx');
  await handle.writeFile(JSON.stringify({ pid: process.pid, host: 'test', at: new Date().toISOString() }));
  await handle.close();
  return () => rm(`${file}.lock`);
}

describe('route file write-back', () => {
  let monolithUrl: string;
  let notificationUrl: string;

  beforeAll(async () => {
    monolithUrl = (await startUpstream('monolith')).url;
    notificationUrl = (await startUpstream('notification')).url;
  });

  /** A route file in its own folder, with the audit log in another one (so only the table's folder can be made unwritable). */
  async function routeFile() {
    const root = await tempDir();
    await mkdir(path.join(root, 'table'));
    await mkdir(path.join(root, 'audit'));
    const file = path.join(root, 'table', 'routes.yaml');
    await writeFile(file, fileText(monolithUrl, notificationUrl));
    return { file, auditFile: path.join(root, 'audit', 'routes.audit.jsonl') };
  }

  it('keeps the mode of the file it replaces', async () => {
    const { file } = await routeFile();
    await chmod(file, 0o600);
    await writeFileAtomic(file, fileText(monolithUrl, notificationUrl).replace('# write-back tests', '# changed'));
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(await readFile(file, 'utf8')).toContain('# changed');
  });

  it('when the admin API cannot write the route file, nothing changes and nothing is audited', async (ctx) => {
    const { file, auditFile } = await routeFile();
    const f = await startFacade({ routesFile: file, auditFile, adminToken: TOKEN, watch: false });
    const admin = supertest(createAdminApi(f.facade));
    const generation = f.facade.table().generation;
    const restore = await makeUnwritable(path.dirname(file));
    if (!restore) return ctx.skip();
    teardown(restore);
    try {
      const res = await admin.patch('/routes/notifications.get').set('authorization', `Bearer ${TOKEN}`).send({ serve: 'notification', why: 'promote' });
      expect(res.status).toBe(500);
      expect(res.body.error).toMatchObject({ code: 'ROUTE_FILE_WRITE_FAILED', details: { file } });
      expect(res.body.error.message).toMatch(/nothing was changed/);
    } finally {
      await restore();
    }
    expect(await auditLines(auditFile)).toEqual([]);
    expect(f.facade.table().generation).toBe(generation);
    expect(f.facade.table().byId.get('notifications.get')!.serve.name).toBe('monolith');
    expect((await routesIn(file))['notifications.get']!.serve).toBe('monolith');
  });

  it('when flip --routes cannot write the route file, nothing is audited', async (ctx) => {
    const { file, auditFile } = await routeFile();
    const restore = await makeUnwritable(path.dirname(file));
    if (!restore) return ctx.skip();
    teardown(restore);
    try {
      await expect(flipRoute({ routeId: 'notifications.get', patch: { serve: 'notification' }, why: 'promote', routesFile: file, auditFile })).rejects.toThrow();
    } finally {
      await restore();
    }
    expect(await auditLines(auditFile)).toEqual([]);
    expect((await routesIn(file))['notifications.get']!.serve).toBe('monolith');
  });

  it('audits a flip with --routes after the file is written', async () => {
    const { file, auditFile } = await routeFile();
    const result = await flipRoute({ routeId: 'notifications.get', patch: { serve: 'notification' }, why: 'promote', who: 'ada', routesFile: file, auditFile });
    expect(result).toMatchObject({ via: 'file', audited: true });
    expect(await auditLines(auditFile)).toMatchObject([{ who: 'ada', source: 'file', routeId: 'notifications.get', why: 'promote', after: { serve: 'notification' } }]);
  });

  it('audits a hand edit no facade loaded yet before the flip that follows it, and edits made while no facade ran when one starts', async () => {
    const { file, auditFile } = await routeFile();
    const f = await createFacade({ routesFile: file, auditFile, watchDebounceMs: 1_000 });
    teardown(() => f.close());
    // By hand, then at once a flip: the facade has not reloaded the hand edit yet.
    await writeFile(file, (await readFile(file, 'utf8')).replace(/(id: notifications\.send[\s\S]*?serve: )monolith/, '$1notification'));
    await flipRoute({ routeId: 'notifications.get', patch: { serve: 'notification' }, why: 'promote', who: 'ada', routesFile: file, auditFile });
    await f.reload({ source: 'file' });
    expect(f.table().byId.get('notifications.send')!.serve.name).toBe('notification');
    expect(await auditLines(auditFile)).toMatchObject([
      { source: 'file', routeId: 'notifications.send', before: { serve: 'monolith' }, after: { serve: 'notification' }, who: expect.stringMatching(/^file-owner:uid=\d+$/), why: 'route file edited by hand (found by strangler flip)' },
      { source: 'file', routeId: 'notifications.get', after: { serve: 'notification' }, who: 'ada', why: 'promote' },
    ]);
    await f.close();

    // With no facade running, by hand; the next facade to start audits it.
    await writeFile(file, (await readFile(file, 'utf8')).replace(/(id: notifications\.get[\s\S]*?serve: )notification/, '$1monolith'));
    const g = await createFacade({ routesFile: file, auditFile, watch: false });
    teardown(() => g.close());
    const lines = await auditLines(auditFile);
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatchObject({ source: 'file', routeId: 'notifications.get', before: { serve: 'notification' }, after: { serve: 'monolith' }, why: 'route file changed while the facade was not running' });
    // Started again on the same file: nothing new to audit.
    const h = await createFacade({ routesFile: file, auditFile, watch: false });
    teardown(() => h.close());
    expect(await auditLines(auditFile)).toHaveLength(3);
  });

  it('flip --routes waits while another writer holds the route file, then applies its change on top', async () => {
    const { file, auditFile } = await routeFile();
    const original = await readFile(file, 'utf8');
    const release = await holdLock(file);
    const flip = flipRoute({ routeId: 'notifications.get', patch: { serve: 'notification' }, why: 'promote', routesFile: file, auditFile });
    await new Promise((r) => setTimeout(r, 300));
    // The other writer's change, made from the file as it was before the flip started.
    await writeFile(file, applyRoutePatch(original, 'yaml', 'notifications.send', { shadow: { to: 'notification' } }).loaded.text);
    await release();
    await flip;
    const routes = await routesIn(file);
    expect(routes['notifications.get']!.serve).toBe('notification');
    expect(routes['notifications.send']!.shadow).toMatchObject({ to: 'notification' });
  });

  it("the facade's API write-back waits for the same lock, so a concurrent flip --routes is not lost", async () => {
    const { file, auditFile } = await routeFile();
    const f = await startFacade({ routesFile: file, auditFile, adminToken: TOKEN, watch: false });
    const original = await readFile(file, 'utf8');
    const release = await holdLock(file);
    const change = f.facade.changeRoute('notifications.get', { serve: 'notification' }, { who: 'ada', why: 'promote' });
    await new Promise((r) => setTimeout(r, 300));
    await writeFile(file, applyRoutePatch(original, 'yaml', 'notifications.send', { shadow: { to: 'notification' } }).loaded.text);
    await release();
    await change;
    const routes = await routesIn(file);
    expect(routes['notifications.get']!.serve).toBe('notification');
    expect(routes['notifications.send']!.shadow).toMatchObject({ to: 'notification' });
    expect(f.facade.table().byId.get('notifications.send')!.shadow).not.toBeNull();
  });

  it('flip --routes goes through the admin API when the running facade serves that file', async () => {
    const { file, auditFile } = await routeFile();
    const facade = await createFacade({ routesFile: file, auditFile, adminToken: TOKEN, watch: false });
    const running = await listenFacade(facade, { port: 0, adminPort: 0 });
    teardown(() => running.close(100));
    const viaApi = await flipRoute({ routeId: 'notifications.get', patch: { serve: 'notification' }, why: 'promote', routesFile: file, adminUrl: running.admin!.url, adminToken: TOKEN });
    expect(viaApi.via).toBe('admin');
    expect(facade.table().byId.get('notifications.get')!.serve.name).toBe('notification');

    // Another file than the one the facade serves: edited directly.
    const other = await routeFile();
    const direct = await flipRoute({ routeId: 'notifications.get', patch: { serve: 'notification' }, why: 'promote', routesFile: other.file, auditFile: other.auditFile, adminUrl: running.admin!.url, adminToken: TOKEN });
    expect(direct.via).toBe('file');

    // A token the facade refuses: reported, and the file is not edited behind the facade's back.
    const before = await readFile(other.file, 'utf8');
    await expect(
      flipRoute({ routeId: 'notifications.send', patch: { serve: 'notification' }, why: 'promote', routesFile: other.file, auditFile: other.auditFile, adminUrl: running.admin!.url, adminToken: 'not-the-token-at-all' }),
    ).rejects.toThrow(/admin API at .* refused STRANGLER_ADMIN_TOKEN \(401\), so it could not be asked whether it serves .*: set the token the facade runs with, or unset STRANGLER_ADMIN_TOKEN/);
    expect(await readFile(other.file, 'utf8')).toBe(before);
  });
});
