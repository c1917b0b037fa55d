import { lstat, mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { json, request, startFacade, startUpstream, table, tempDir, waitFor, type TestFacade, type Upstream } from './helpers.ts';

describe('hot reload', () => {
  let monolith: Upstream;
  let notification: Upstream;
  let dir: string;
  let file: string;
  let f: TestFacade;
  const invalid: unknown[] = [];

  const routesServedBy = (serve: string, extra: unknown[] = []) =>
    table({
      upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url } },
      routes: [{ id: 'notifications.get', match: { method: 'GET', path: '/api/notifications/:id' }, effects: 'read', serve }, ...extra],
      default: 'monolith',
    });
  const who = async () => json(await request(`${f.url}/api/notifications/1`)).upstream;

  beforeAll(async () => {
    const slowly = (name: string) => async (req: { url?: string }, res: import('node:http').ServerResponse) => {
      if (req.url?.includes('slow')) await new Promise((r) => setTimeout(r, 400));
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ upstream: name }));
    };
    monolith = await startUpstream('monolith', slowly('monolith'));
    notification = await startUpstream('notification', slowly('notification'));
    dir = await tempDir();
    file = path.join(dir, 'routes.yaml');
    await writeFile(file, routesServedBy('monolith'));
    f = await startFacade({ routesFile: file, watchDebounceMs: 20 });
    f.facade.on('facade:reload:invalid', (e) => invalid.push(e));
  });

  it('swaps in a valid file when it changes, while a request in flight finishes on the old table', async () => {
    expect(await who()).toBe('monolith');
    const generation = f.facade.table().generation;
    const inFlight = request(`${f.url}/api/notifications/slow`);
    await waitFor(() => monolith.requests.some((r) => r.url.endsWith('/slow')), 2_000, 'the slow request to start');
    await writeFile(file, routesServedBy('notification'));
    await waitFor(() => f.facade.table().generation > generation, 3_000, 'the reload');
    expect(await who()).toBe('notification');
    expect(json(await inFlight).upstream).toBe('monolith');

    const audit = await f.facade.audit!.read();
    expect(audit[0]).toMatchObject({ source: 'file', routeId: 'notifications.get', before: { serve: 'monolith' }, after: { serve: 'notification' }, why: 'route file changed on disk' });
    expect(audit[0]!.who).toMatch(/^file-owner:uid=\d+$/);
  });

  it('refuses an invalid file, logs and counts it, and keeps serving the last good table', async () => {
    const before = f.facade.table();
    await writeFile(file, 'upstreams:\n  monolith: { url: nope }\nroutes: []\ndefault: monolith\n');
    await waitFor(() => invalid.length >= 1, 3_000, 'the refusal');
    expect(invalid[0]).toMatchObject({ source: 'file', problems: ['upstream "monolith" field "url": must be an http:// or https:// URL, e.g. http://127.0.0.1:3104'] });
    expect(f.facade.table()).toBe(before);
    expect(await who()).toBe('notification');
    const metrics = await f.facade.metrics.registry.metrics();
    expect(metrics).toMatch(/strangler_facade_route_table_reloads_total\{source="file",result="invalid",service="facade"\} [1-9]/);
  });

  it('refuses a table with two routes for the same method and path', async () => {
    const before = f.facade.table();
    const count = invalid.length;
    const clash = { id: 'notifications.get2', match: { method: 'GET', path: '/api/notifications/:notificationId' }, effects: 'read', serve: 'monolith' };
    await writeFile(file, routesServedBy('monolith', [clash]));
    await waitFor(() => invalid.length > count, 3_000, 'the refusal');
    expect((invalid.at(-1) as { problems: string[] }).problems[0]).toMatch(/both match GET \/api\/notifications\/:notificationId/);
    expect(f.facade.table()).toBe(before);
    expect(await who()).toBe('notification');
  });

  it('applies a file fixed after a refusal, and re-applies nothing when the content is unchanged', async () => {
    await writeFile(file, routesServedBy('monolith'));
    await waitFor(async () => (await who()) === 'monolith', 3_000, 'the fixed file');
    const generation = f.facade.table().generation;
    const lines = async () => (await readFile(f.facade.audit!.file, 'utf8')).trim().split('\n').length;
    const auditLines = await waitFor(async () => ((await lines()) === 2 ? 2 : 0), 2_000, 'the second audit entry');
    expect(await f.facade.reload({ source: 'sighup' })).toEqual({ status: 'unchanged', generation });
    await writeFile(file, routesServedBy('monolith'));
    await new Promise((r) => setTimeout(r, 100));
    expect(f.facade.table().generation).toBe(generation);
    expect((await readFile(f.facade.audit!.file, 'utf8')).trim().split('\n')).toHaveLength(auditLines);
  });
});

describe('a route file reached through symbolic links (a Kubernetes ConfigMap volume)', () => {
  it('reloads when the links are swapped, and writes a change through them, keeping the link', async () => {
    const monolith = await startUpstream('monolith');
    const notification = await startUpstream('notification');
    const text = (serve: string) =>
      table({
        upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url } },
        routes: [{ id: 'notifications.get', match: { method: 'GET', path: '/api/notifications/:id' }, effects: 'read', serve }],
        default: 'monolith',
      });
    // As the kubelet lays it out: routes.yaml -> ..data/routes.yaml, ..data -> ..<timestamp>.
    const dir = await tempDir();
    const version = async (name: string, serve: string) => {
      await mkdir(path.join(dir, name));
      await writeFile(path.join(dir, name, 'routes.yaml'), text(serve));
    };
    await version('..2026_11_25_01', 'monolith');
    await symlink('..2026_11_25_01', path.join(dir, '..data'));
    await symlink('..data/routes.yaml', path.join(dir, 'routes.yaml'));
    const file = path.join(dir, 'routes.yaml');
    const f = await startFacade({ routesFile: file, watchDebounceMs: 20 });
    // Reloads that found the file unchanged, from the metrics.
    const unchanged = async () => Number(/strangler_facade_route_table_reloads_total\{source="file",result="unchanged"[^}]*\} (\d+)/.exec(await f.facade.metrics.registry.metrics())?.[1] ?? 0);
    const who = async () => json(await request(`${f.url}/api/notifications/1`)).upstream;
    expect(await who()).toBe('monolith');

    // An update: a new folder, a new link renamed over ..data; routes.yaml itself is untouched.
    await version('..2026_11_25_02', 'notification');
    await symlink('..2026_11_25_02', path.join(dir, '..data_tmp'));
    await rename(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
    await waitFor(async () => (await who()) === 'notification', 5_000, 'the swapped file applied');

    await f.facade.changeRoute('notifications.get', { serve: 'monolith' }, { who: 'test', why: 'through the link' });
    expect((await lstat(file)).isSymbolicLink()).toBe(true);
    expect(await readFile(path.join(dir, '..2026_11_25_02', 'routes.yaml'), 'utf8')).toContain('serve: monolith');
    expect(await who()).toBe('monolith');
    // Reloading takes the file's lock, a file in the same folder: that must not count as a change,
    // or every reload would start another.
    await f.facade.reload({ source: 'file' });
    await new Promise((r) => setTimeout(r, 200));
    const before = await unchanged();
    await new Promise((r) => setTimeout(r, 500));
    expect(await unchanged()).toBe(before);
  });
});
