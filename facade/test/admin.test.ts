import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import supertest from 'supertest';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { command as flipCommand } from '../../scripts/src/commands/flip.ts';
import { command as routesCommand } from '../../scripts/src/commands/routes.ts';
import { createAdminApi, createFacade, listenFacade, type RunningFacade } from '../src/index.ts';
import { json, request, startFacade, startUpstream, teardown, tempDir, waitFor, type TestFacade, type Upstream } from './helpers.ts';

const TOKEN = 'admin-secret-for-tests-0123456789';

const fileText = (monolith: string, notification: string) => `# Routes for the admin tests: this comment must survive write-back.
upstreams:
  monolith:     { url: ${monolith} }
  notification: { url: ${notification}, dryRun: true }
routes:
  - id: notifications.send
    match: { method: POST, path: /api/notifications }
    effects: unsafe   # never replayed
    serve: monolith
  - id: notifications.get
    match: { method: GET, path: /api/notifications/:id }
    effects: read
    serve: monolith
default: monolith
`;

describe('admin API', () => {
  let monolith: Upstream;
  let notification: Upstream;
  let file: string;
  let f: TestFacade;
  let admin: supertest.Agent;

  beforeAll(async () => {
    monolith = await startUpstream('monolith');
    notification = await startUpstream('notification');
    file = path.join(await tempDir(), 'routes.yaml');
    await writeFile(file, fileText(monolith.url, notification.url));
    f = await startFacade({ routesFile: file, adminToken: TOKEN, watchDebounceMs: 20 });
    admin = supertest.agent(createAdminApi(f.facade));
  });

  it('refuses a missing or wrong token and accepts the right one; health and metrics stay open', async () => {
    const missing = await admin.get('/routes');
    expect(missing.status).toBe(401);
    expect(missing.body.error).toEqual({ code: 'UNAUTHENTICATED', message: 'Send the admin token as "Authorization: Bearer <STRANGLER_ADMIN_TOKEN>".' });
    const wrong = await admin.get('/routes').set('authorization', `Bearer ${TOKEN}x`);
    expect(wrong.status).toBe(401);
    expect(wrong.body.error.message).toMatch(/wrong/);
    expect((await admin.get('/routes').set('authorization', `Basic ${TOKEN}`)).status).toBe(401);
    expect((await admin.get('/routes').set('authorization', `Bearer ${TOKEN}`)).status).toBe(200);
    expect((await admin.get('/healthz')).status).toBe(200);
    expect((await admin.get('/metrics')).text).toContain('strangler_facade_route_table_generation');
  });

  it('serves metrics on a metrics port of their own when configured, loopback by default, even with the admin API off', async () => {
    const facade = await createFacade({ routesText: fileText(monolith.url, notification.url) });
    const running = await listenFacade(facade, { port: 0, adminPort: 0, metricsPort: 0 });
    teardown(() => running.close(100));
    expect(running.admin).toBeNull();
    expect(running.metrics!.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    await request(`${running.main.url}/api/notifications/1`);
    const metrics = await request(`${running.metrics!.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.headers['content-type']).toMatch(/^text\/plain/);
    expect(metrics.body.toString()).toContain('strangler_facade_requests_total{route="notifications.get",upstream="monolith",side="serve",code="200"');
    expect((await request(`${running.metrics!.url}/routes`)).status).toBe(404);
    expect((await request(`${running.main.url}/__strangler/metrics`)).status).toBe(404);

    const without = await listenFacade(await createFacade({ routesText: fileText(monolith.url, notification.url) }), { port: 0 });
    teardown(() => without.close(100));
    expect(without.metrics).toBeNull();
  });

  it('is off unless a token is configured', async () => {
    const facade = await createFacade({ routesText: fileText(monolith.url, notification.url) });
    const running = await listenFacade(facade, { port: 0, adminPort: 0 });
    teardown(() => running.close(100));
    expect(facade.adminEnabled).toBe(false);
    expect(running.admin).toBeNull();
  });

  it('lists routes with live stats: requests, errors, latency, breaker state, canary share, shadow mismatch rate', async () => {
    for (let i = 0; i < 5; i++) await request(`${f.url}/api/notifications/${i}`);
    await request(`${f.url}/elsewhere`);
    const res = await admin.get('/routes').set('authorization', `Bearer ${TOKEN}`);
    expect(res.status).toBe(200);
    const get = res.body.routes.find((r: { id: string }) => r.id === 'notifications.get');
    expect(get).toMatchObject({ match: { method: 'GET', path: '/api/notifications/:id' }, effects: 'read', serve: 'monolith', shadow: null, canary: null, breakers: { monolith: 'closed' } });
    expect(get.stats).toMatchObject({ requests: 5, errors: 0, canaryShare: 0 });
    expect(get.stats.p50Ms).toBeGreaterThan(0);
    expect(get.stats.p99Ms).toBeGreaterThanOrEqual(get.stats.p50Ms);
    expect(res.body.routes.find((r: { id: string }) => r.id === '(default)').stats.requests).toBe(1);
  });

  it('changes a route: validated like the file, written back atomically with comments kept, applied and audited once', async () => {
    const res = await admin
      .patch('/routes/notifications.send')
      .set('authorization', `Bearer ${TOKEN}`)
      .send({ shadow: { to: 'notification', percent: 100 }, why: 'compare the new service', who: 'ada' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ before: { serve: 'monolith' }, after: { serve: 'monolith', shadow: { to: 'notification', percent: 100 } } });

    const text = await readFile(file, 'utf8');
    expect(text).toContain('# Routes for the admin tests: this comment must survive write-back.');
    expect(text).toMatch(/effects: unsafe +# never replayed/);
    expect(text).toContain('shadow: { to: notification, percent: 100 }');
    expect(f.facade.table().byId.get('notifications.send')!.shadow).not.toBeNull();

    await new Promise((r) => setTimeout(r, 300)); // the watcher sees the write: it must not audit it again
    const audit = await admin.get('/audit').set('authorization', `Bearer ${TOKEN}`);
    expect(audit.body.entries).toHaveLength(1);
    expect(audit.body.entries[0]).toMatchObject({
      who: 'ada',
      source: 'api',
      routeId: 'notifications.send',
      before: { id: 'notifications.send', serve: 'monolith' },
      after: { shadow: { to: 'notification', percent: 100 } },
      why: 'compare the new service',
      at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });

    await admin.patch('/routes/notifications.send').set('authorization', `Bearer ${TOKEN}`).send({ shadow: null, why: 'done comparing' }).expect(200);
    expect(await readFile(file, 'utf8')).not.toContain('shadow:');
    const byRoute = await admin.get('/audit?route=notifications.send&limit=1').set('authorization', `Bearer ${TOKEN}`);
    expect(byRoute.body.entries).toMatchObject([{ why: 'done comparing', who: 'admin-api' }]);
  });

  it('cuts over: serving the canary and shadow candidate ends both; a change to what already is writes and audits nothing', async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    await admin.patch('/routes/notifications.get').set(auth).send({ shadow: { to: 'notification', percent: 100 }, canary: { to: 'notification', percent: 50 }, why: 'canary' }).expect(200);
    const entries = async () => (await admin.get('/audit?route=notifications.get').set(auth)).body.entries as unknown[];
    const audited = (await entries()).length;
    const cut = await admin.patch('/routes/notifications.get').set(auth).send({ serve: 'notification', why: 'cut over' });
    expect(cut.status).toBe(200);
    expect(cut.body).toMatchObject({ changed: true, implied: ['shadow to notification ended: it now serves the route', 'canary to notification ended: it now serves the route'] });
    expect(cut.body.after).toEqual({ id: 'notifications.get', match: { method: 'GET', path: '/api/notifications/:id' }, effects: 'read', serve: 'notification' });
    expect(f.facade.table().byId.get('notifications.get')).toMatchObject({ shadow: null, canary: null });
    expect(await entries()).toHaveLength(audited + 1);

    const fileBefore = await readFile(file, 'utf8');
    const generation = f.facade.table().generation;
    const again = await admin.patch('/routes/notifications.get').set(auth).send({ serve: 'notification', why: 'cut over again' });
    expect(again.body).toMatchObject({ changed: false, implied: [] });
    expect(await readFile(file, 'utf8')).toBe(fileBefore);
    expect(f.facade.table().generation).toBe(generation);
    expect(await entries()).toHaveLength(audited + 1);
    await admin.patch('/routes/notifications.get').set(auth).send({ serve: 'monolith', why: 'back' }).expect(200);
  });

  it('refuses bad changes with every problem and what to fix, changing nothing', async () => {
    const before = await readFile(file, 'utf8');
    const auth = { authorization: `Bearer ${TOKEN}` };
    const noWhy = await admin.patch('/routes/notifications.get').set(auth).send({ serve: 'notification' });
    expect(noWhy.status).toBe(400);
    expect(noWhy.body.error).toMatchObject({ code: 'VALIDATION_FAILED', details: [{ field: 'why', problem: 'say why you change the route (it goes to the audit log)' }] });

    const unknownField = await admin.patch('/routes/notifications.get').set(auth).send({ serv: 'notification', why: 'typo' });
    expect(unknownField.status).toBe(400);
    expect(unknownField.body.error.details[0].problem).toMatch(/serv/);

    const unknownUpstream = await admin.patch('/routes/notifications.get').set(auth).send({ serve: 'payments', why: 'flip' });
    expect(unknownUpstream.status).toBe(400);
    expect(unknownUpstream.body.error).toMatchObject({
      code: 'ROUTE_TABLE_INVALID',
      details: ['route "notifications.get" (routes[1]) field "serve": unknown upstream "payments": declare it under "upstreams" or use one of monolith, notification'],
    });

    const badCanary = await admin.patch('/routes/notifications.get').set(auth).send({ canary: { to: 'notification', percent: 500 }, why: 'ramp' });
    expect(badCanary.status).toBe(400);
    expect(badCanary.body.error.details).toEqual(['route "notifications.get" (routes[1]) field "canary.percent": must be a number from 0 to 100']);

    const missing = await admin.patch('/routes/nope').set(auth).send({ serve: 'notification', why: 'flip' });
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('ROUTE_NOT_FOUND');

    const notJson = await admin.patch('/routes/notifications.get').set(auth).set('content-type', 'application/json').send('{"serve":');
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.code).toBe('MALFORMED_JSON');
    expect(await readFile(file, 'utf8')).toBe(before);
  });

  it('lists shadow mismatches and reloads on request', async () => {
    const mismatches = await admin.get('/shadow/mismatches?limit=5').set('authorization', `Bearer ${TOKEN}`);
    expect(mismatches.status).toBe(200);
    expect(mismatches.body.mismatches).toEqual([]);
    expect((await admin.get('/shadow/mismatches?limit=0').set('authorization', `Bearer ${TOKEN}`)).body.error.details).toEqual([{ field: 'limit', problem: 'must be from 1 to 1000' }]);
    const reload = await admin.post('/reload').set('authorization', `Bearer ${TOKEN}`);
    expect(reload.body).toMatchObject({ status: 'unchanged' });
  });
});

describe('strangler CLI: flip and routes', () => {
  let running: RunningFacade;
  let file: string;
  let notification: Upstream;
  const out: string[] = [];

  beforeAll(async () => {
    const monolith = await startUpstream('monolith');
    notification = await startUpstream('notification');
    file = path.join(await tempDir(), 'routes.yaml');
    await writeFile(file, fileText(monolith.url, notification.url));
    const facade = await createFacade({ routesFile: file, adminToken: TOKEN, watchDebounceMs: 20 });
    running = await listenFacade(facade, { port: 0, adminPort: 0 });
    teardown(() => running.close(100));
    vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void out.push(args.join(' ')));
    teardown(() => vi.restoreAllMocks());
  });

  const env = (vars: Record<string, string | undefined>) => {
    const saved = { ...process.env };
    Object.assign(process.env, vars);
    return () => {
      process.env = saved;
    };
  };

  it('flips a route through the admin API and lists routes with live stats', async () => {
    const restore = env({ STRANGLER_ADMIN_URL: running.admin!.url, STRANGLER_ADMIN_TOKEN: TOKEN });
    try {
      const code = await flipCommand.run({ positionals: ['notifications.get'], values: { canary: 'notification', percent: '10', 'sticky-by': 'header:x-user', why: 'start the canary', who: 'grace' } });
      expect(code).toBe(0);
      expect(out.join('\n')).toContain('notifications.get changed (through the admin API)');
      expect(running.main.url).toBeTruthy();
      await request(`${running.main.url}/api/notifications/1`, { headers: { 'x-user': 'u1' } });
      out.length = 0;
      expect(await routesCommand.run({ positionals: [], values: {} })).toBe(0);
      const table = out.join('\n');
      expect(table).toMatch(/^ROUTE\s+MATCH\s+EFFECTS\s+SERVE\s+CANARY/);
      expect(table).toMatch(/notifications\.get\s+GET \/api\/notifications\/:id\s+read\s+monolith\s+notification 10% \(now (0\.0|100\.0)%\)/);
      const audit = (await readFile(file.replace(/\.yaml$/, '.audit.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
      expect(audit.at(-1)).toMatchObject({ who: 'grace', source: 'api', why: 'start the canary', after: { canary: { to: 'notification', percent: 10, stickyBy: 'header:x-user' } } });
    } finally {
      restore();
    }
  });

  it('edits the route file directly with --routes; the running facade reloads it without auditing it twice', async () => {
    const restore = env({ STRANGLER_ADMIN_TOKEN: undefined });
    try {
      const code = await flipCommand.run({ positionals: ['notifications.get'], values: { serve: 'notification', 'off-canary': true, why: 'promote', routes: file } });
      expect(code).toBe(0);
      await waitFor(async () => json(await request(`${running.main.url}/api/notifications/1`)).upstream === 'notification', 3_000, 'the facade to reload');
      await new Promise((r) => setTimeout(r, 200));
      const audit = (await readFile(file.replace(/\.yaml$/, '.audit.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
      expect(audit.filter((e) => e.why === 'promote')).toHaveLength(1);
      expect(audit.at(-1)).toMatchObject({ source: 'file', routeId: 'notifications.get', after: { serve: 'notification' } });
      expect(audit.at(-1).after.canary).toBeUndefined();
    } finally {
      restore();
    }
  });

  it('explains usage mistakes', async () => {
    await expect(flipCommand.run({ positionals: ['notifications.get'], values: { canary: 'notification', why: 'x y z' } })).rejects.toThrow('--canary needs --percent N');
    await expect(flipCommand.run({ positionals: ['notifications.get'], values: { serve: 'notification', routes: file } })).rejects.toThrow('--why "<reason>" is required');
    await expect(flipCommand.run({ positionals: [], values: { serve: 'x' } })).rejects.toThrow('Give exactly one route id');
    await expect(flipCommand.run({ positionals: ['notifications.get'], values: { percent: '5', why: 'abc' } })).rejects.toThrow('--percent goes with --shadow <upstream> or --canary <upstream>');
    await expect(flipCommand.run({ positionals: ['notifications.get'], values: { serve: 'nope', why: 'abc', routes: file } })).rejects.toThrow(/unknown upstream "nope"/);
  });
});
