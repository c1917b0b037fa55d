import { randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { json, request, startFacade, startUpstream, table, waitFor, type TestFacade, type Upstream } from './helpers.ts';

const ADMIN = 'admin-token-for-tests-0123456789';

describe('serve and canary', () => {
  let monolith: Upstream;
  let notification: Upstream;
  let f: TestFacade;

  beforeAll(async () => {
    monolith = await startUpstream('monolith');
    notification = await startUpstream('notification');
    f = await startFacade({
      adminToken: ADMIN,
      routesText: table({
        upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url } },
        routes: [
          { id: 'notifications.get', match: { method: 'GET', path: '/api/notifications/:id' }, effects: 'read', serve: 'notification' },
          { id: 'notifications.list', match: { method: 'GET', path: '/api/notifications' }, effects: 'read', serve: 'monolith', canary: { to: 'notification', percent: 50, stickyBy: 'header:x-tenant' } },
        ],
        default: 'monolith',
      }),
    });
  });

  const who = async (path: string, headers: Record<string, string> = {}) => json(await request(`${f.url}${path}`, { headers })).upstream;

  it('serves a route from its serve upstream and unmatched requests from the default', async () => {
    expect(await who('/api/notifications/7')).toBe('notification');
    expect(await who('/api/notifications/7?fields=all')).toBe('notification');
    expect(await who('/api/users/7')).toBe('monolith');
    expect(await who('/api/notifications/7/extra')).toBe('monolith');
  });

  it('splits a canary route by cohort, each key always landing on the same side', async () => {
    const sides = new Map<string, string>();
    for (let i = 0; i < 200; i++) sides.set(`tenant-${i}`, String(await who('/api/notifications', { 'x-tenant': `tenant-${i}` })));
    const share = [...sides.values()].filter((s) => s === 'notification').length / sides.size;
    expect(share).toBeGreaterThan(0.35);
    expect(share).toBeLessThan(0.65);
    for (const [key, side] of [...sides].slice(0, 50)) expect(await who('/api/notifications', { 'x-tenant': key })).toBe(side);
  });

  it('lets a request carrying the admin token force a side, and ignores the header without it', async () => {
    const monolithKey = await waitFor(async () => {
      const key = randomUUID();
      return (await who('/api/notifications', { 'x-tenant': key })) === 'monolith' ? key : null;
    });
    expect(await who('/api/notifications', { 'x-tenant': monolithKey, 'x-strangler-side': 'canary', 'x-strangler-admin-token': ADMIN })).toBe('notification');
    expect(await who('/api/notifications', { 'x-tenant': monolithKey, 'x-strangler-side': 'canary', 'x-strangler-admin-token': 'wrong' })).toBe('monolith');
    expect(await who('/api/notifications', { 'x-tenant': monolithKey, 'x-strangler-side': 'canary' })).toBe('monolith');
    expect(notification.requests.at(-1)!.headers['x-strangler-side']).toBeUndefined();
  });
});

describe('shadow', () => {
  let monolith: Upstream;
  let notification: Upstream;
  let f: TestFacade;
  let nameOf: (id: string) => string;

  beforeAll(async () => {
    // The primary's own noise: a fresh generatedAt and requestNonce on every answer.
    const body = (id: string, name: string, tags: string[]) => ({
      id,
      name,
      tags,
      generatedAt: new Date(Date.now() + Math.random() * 1000).toISOString(),
      requestNonce: randomUUID(),
      traceId: randomUUID(),
      items: [{ id: 'a', createdAt: randomUUID() }],
    });
    nameOf = (id) => `notification ${id}`;
    monolith = await startUpstream('monolith', (req, res) => {
      const id = req.url!.split('/').pop()!;
      res.writeHead(200, { 'content-type': 'application/json', 'x-version': '1', 'x-served-by': 'monolith' });
      res.end(JSON.stringify(body(id, nameOf(id), ['email', 'sms', 'push'])));
    });
    notification = await startUpstream('notification', async (req, res) => {
      const id = req.url!.split('/').pop()!;
      if (id === 'slow') await new Promise((r) => setTimeout(r, 1_000));
      res.writeHead(id === 'gone' ? 404 : 200, { 'content-type': 'application/json', 'x-version': id === 'v2' ? '2' : '1', 'x-served-by': 'notification' });
      // Same data in another order; one record differs for real.
      res.end(JSON.stringify(body(id, id === 'bad' ? 'WRONG' : nameOf(id), ['push', 'email', 'sms'])));
    });
    f = await startFacade({
      shadow: { noiseWarmUp: 3 },
      routesText: table({
        upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url } },
        routes: [
          {
            id: 'notifications.get',
            match: { method: 'GET', path: '/api/notifications/:id' },
            effects: 'read',
            serve: 'monolith',
            shadow: { to: 'notification', percent: 100, ignore: ['$.traceId'], unorderedArrays: ['$.tags'], compareHeaders: ['content-type', 'x-version'], noiseSample: 0 },
          },
        ],
        default: 'monolith',
      }),
    });
  });

  it('answers with the primary, mirrors to the candidate, and records only real differences with a structured diff', async () => {
    // Warm-up: the first comparisons also ask the primary twice, learning its own noise.
    for (let i = 0; i < 3; i++) expect((await request(`${f.url}/api/notifications/w${i}`)).status).toBe(200);
    await waitFor(() => f.facade.metrics.shadow.get().then((m) => m.values.reduce((n, v) => n + v.value, 0) >= 3), 5_000, 'warm-up comparisons');
    expect(monolith.requests.filter((r) => r.url.endsWith('/w0'))).toHaveLength(2);

    const ok = await request(`${f.url}/api/notifications/n1`, { headers: { 'x-request-id': 'same-1' } });
    expect(ok.headers['x-served-by']).toBe('monolith');
    expect(json(ok).name).toBe('notification n1');
    const bad = await request(`${f.url}/api/notifications/bad`, { headers: { 'x-request-id': 'bad-1' } });
    expect(json(bad).name).toBe('notification bad');
    await request(`${f.url}/api/notifications/v2`, { headers: { 'x-request-id': 'v2-1' } });

    const mismatches = await waitFor(() => (f.facade.mismatches().length >= 2 ? f.facade.mismatches() : null), 5_000, 'mismatches');
    expect(mismatches.map((m) => m.requestId).sort()).toEqual(['bad-1', 'v2-1']);
    const badOne = mismatches.find((m) => m.requestId === 'bad-1')!;
    expect(badOne).toMatchObject({ routeId: 'notifications.get', method: 'GET', url: '/api/notifications/bad', primary: 'monolith', candidate: 'notification' });
    expect(badOne.diff).toEqual([{ path: '$.name', canonical: '$.name', kind: 'changed', primary: 'notification bad', candidate: 'WRONG' }]);
    expect(badOne.noise).toEqual(expect.arrayContaining(['$.generatedAt', '$.requestNonce', '$.items[0].createdAt']));
    const v2 = mismatches.find((m) => m.requestId === 'v2-1')!;
    expect(v2.diff).toEqual([{ path: '(header x-version)', canonical: '(header x-version)', kind: 'changed', primary: '1', candidate: '2' }]);

    const routes = await f.facade.routes();
    const stats = routes.find((r) => r.id === 'notifications.get')!.shadowStats!;
    expect(stats).toMatchObject({ compared: 6, mismatches: 2 });
    expect(stats.noise).toEqual(['$.generatedAt', '$.items[*].createdAt', '$.requestNonce']);
    const metrics = await f.facade.metrics.registry.metrics();
    expect(metrics).toMatch(/strangler_facade_shadow_mismatch_ratio\{route="notifications.get",service="facade"\} 0\.333/);
  });

  it('does not make the client wait for a slow candidate', async () => {
    const started = Date.now();
    const res = await request(`${f.url}/api/notifications/slow`);
    expect(res.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(500);
  });
});

describe('shadowing an unsafe route', () => {
  it('sends the candidate a dry run and never asks the primary twice', async () => {
    let applied = 0;
    const monolith = await startUpstream('monolith', (req, res) => {
      applied++;
      res.writeHead(202, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: randomUUID(), status: 'queued', body: JSON.parse(req.body.toString()) }));
    });
    const notification = await startUpstream('notification', (req, res) => {
      res.writeHead(202, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: randomUUID(), status: 'queued', body: JSON.parse(req.body.toString()) }));
    });
    const f = await startFacade({
      routesText: table({
        upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url, dryRun: true } },
        routes: [{ id: 'notifications.send', match: { method: 'POST', path: '/api/notifications' }, effects: 'unsafe', serve: 'monolith', shadow: { to: 'notification', ignore: ['$.id'] } }],
        default: 'monolith',
      }),
    });
    const payload = JSON.stringify({ userId: 'u1', channel: 'email', template: 'welcome', data: { n: 1 } });
    for (let i = 0; i < 5; i++) {
      const res = await request(`${f.url}/api/notifications`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-strangler-dry-run': '0' }, body: payload });
      expect(res.status).toBe(202);
    }
    await waitFor(() => notification.requests.length === 5, 5_000, 'shadow copies');
    expect(applied).toBe(5);
    expect(monolith.requests.every((r) => r.headers['x-strangler-dry-run'] === undefined)).toBe(true);
    for (const r of notification.requests) {
      expect(r.headers).toMatchObject({ 'x-strangler-dry-run': '1', 'x-strangler-shadow': '1', 'content-type': 'application/json' });
      expect(r.body.toString()).toBe(payload);
    }
    await waitFor(async () => (await f.facade.routes())[0]!.shadowStats!.compared === 5, 5_000, 'comparisons');
    expect(f.facade.mismatches()).toEqual([]);
  });
  it('shadows an idempotent route only as a dry run: the candidate never becomes a second writer', async () => {
    const monolith = await startUpstream('monolith', (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name: JSON.parse(req.body.toString()).name }));
    });
    const notification = await startUpstream('notification', (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name: JSON.parse(req.body.toString()).name }));
    });
    const f = await startFacade({
      routesText: table({
        upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url, dryRun: true } },
        routes: [{ id: 'users.update', match: { method: 'PATCH', path: '/api/users/:id' }, effects: 'idempotent', serve: 'monolith', shadow: { to: 'notification' } }],
        default: 'monolith',
      }),
    });
    for (let i = 0; i < 3; i++) {
      const res = await request(`${f.url}/api/users/1`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: '{"name":"n"}' });
      expect(res.status).toBe(200);
    }
    await waitFor(() => notification.requests.length === 3, 5_000, 'shadow copies');
    for (const r of notification.requests) expect(r.headers).toMatchObject({ 'x-strangler-dry-run': '1', 'x-strangler-shadow': '1' });
    expect(monolith.requests.every((r) => r.headers['x-strangler-dry-run'] === undefined)).toBe(true);
  });
});
