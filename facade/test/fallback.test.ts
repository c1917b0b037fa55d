import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { json, request, startFacade, startUpstream, table, waitFor, type Upstream } from './helpers.ts';

type Behaviour = 'ok' | 'reset' | 'hang' | '404' | '500';

const routes = [
  { id: 'things.get', match: { method: 'GET', path: '/things/:id' }, effects: 'read', serve: 'notification' },
  { id: 'things.put', match: { method: 'PUT', path: '/things/:id' }, effects: 'idempotent', serve: 'notification' },
  { id: 'things.create', match: { method: 'POST', path: '/things' }, effects: 'unsafe', serve: 'notification' },
];

/** A monolith that echoes what it applied, a service whose behaviour the test sets, and a facade in front. */
async function setup(opts: { serviceDown?: boolean; breaker?: Record<string, number> } = {}) {
  const monolith = await startUpstream('monolith', (req, res) => {
    res.writeHead(req.method === 'POST' ? 201 : 200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ upstream: 'monolith', method: req.method, body: req.body.toString() }));
  });
  const service = { behaviour: 'ok' as Behaviour };
  const notification: Upstream = await startUpstream('notification', (req, res) => {
    switch (service.behaviour) {
      case 'reset':
        return void req.socket.destroy();
      case 'hang':
        return; // received, never answered
      case '404':
      case '500':
        res.writeHead(Number(service.behaviour), { 'content-type': 'application/json' });
        return void res.end(JSON.stringify({ error: { code: 'X', message: 'from the service' } }));
      default:
        res.writeHead(200, { 'content-type': 'application/json' });
        return void res.end(JSON.stringify({ upstream: 'notification' }));
    }
  });
  if (opts.serviceDown) await notification.running.close(0);
  const f = await startFacade({
    breaker: { timeoutMs: 300, volumeThreshold: 1_000, resetTimeoutMs: 60_000, ...opts.breaker },
    routesText: table({ upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url } }, routes, default: 'monolith' }),
  });
  const call = {
    read: () => request(`${f.url}/things/1`),
    idempotent: () => request(`${f.url}/things/1`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"name":"idem"}' }),
    unsafe: () => request(`${f.url}/things`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"unsafe"}' }),
  };
  return { monolith, notification, service, f, call };
}

describe('fallback by effects class', () => {
  it('sends every effects class to the monolith when the service refuses connections (nothing reached it)', async () => {
    const { monolith, call } = await setup({ serviceDown: true });
    for (const [effects, body] of [
      ['read', ''],
      ['idempotent', '{"name":"idem"}'],
      ['unsafe', '{"name":"unsafe"}'],
    ] as const) {
      const res = await call[effects]();
      expect(res.status, effects).toBeLessThan(300);
      expect(json(res), effects).toMatchObject({ upstream: 'monolith', body });
    }
    expect(monolith.requests).toHaveLength(3);
  });

  it('replays read and idempotent requests the service dropped after receiving them, but never an unsafe one (502)', async () => {
    const { monolith, notification, service, call } = await setup();
    service.behaviour = 'reset';
    expect(json(await call.read())).toMatchObject({ upstream: 'monolith' });
    expect(json(await call.idempotent())).toMatchObject({ upstream: 'monolith', body: '{"name":"idem"}' });
    const unsafe = await call.unsafe();
    expect(unsafe.status).toBe(502);
    expect(json(unsafe).error).toMatchObject({ code: 'UPSTREAM_CONNECTION_LOST', details: { upstream: 'notification', route: 'things.create' } });
    expect(notification.requests.map((r) => r.method)).toEqual(['GET', 'PUT', 'POST']);
    expect(monolith.requests.map((r) => r.method)).toEqual(['GET', 'PUT']);
  });

  it('replays read and idempotent requests after a timeout, but answers 504 for an unsafe one', async () => {
    const { monolith, notification, service, call } = await setup();
    service.behaviour = 'hang';
    const started = Date.now();
    expect(json(await call.read())).toMatchObject({ upstream: 'monolith' });
    expect(json(await call.idempotent())).toMatchObject({ upstream: 'monolith', body: '{"name":"idem"}' });
    const unsafe = await call.unsafe();
    expect(unsafe.status).toBe(504);
    expect(json(unsafe).error).toMatchObject({ code: 'UPSTREAM_TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(notification.requests).toHaveLength(3);
    expect(monolith.requests.map((r) => r.method)).toEqual(['GET', 'PUT']);
  });

  it('once the breaker is open, sends every class to the monolith without touching the service, and answers 503 where there is no fallback', async () => {
    const { f, monolith, notification, service, call } = await setup({ breaker: { volumeThreshold: 3, errorThresholdPercentage: 50 } });
    service.behaviour = 'reset';
    for (let i = 0; i < 4; i++) await call.read();
    await waitFor(() => f.facade.table().upstreams.get('notification')!.breaker.opened, 2_000, 'the breaker to open');
    const seen = notification.requests.length;
    expect(json(await call.unsafe())).toMatchObject({ upstream: 'monolith', body: '{"name":"unsafe"}' });
    expect(json(await call.read())).toMatchObject({ upstream: 'monolith' });
    expect(notification.requests).toHaveLength(seen);
    expect(monolith.requests.at(-2)!.method).toBe('POST');
    expect((await f.facade.routes()).find((r) => r.id === 'things.get')!.breakers.notification).toBe('open');

    // The monolith's own breaker: nowhere else to go.
    const monolithBreaker = f.facade.table().upstreams.get('monolith')!.breaker;
    monolithBreaker.open();
    const res = await request(`${f.url}/unmatched`);
    expect(res.status).toBe(503);
    expect(json(res).error).toMatchObject({ code: 'UPSTREAM_CIRCUIT_OPEN', details: { upstream: 'monolith' } });
    monolithBreaker.close();
  });

  it('passes 4xx and 5xx answers through; 4xx never open the breaker, 5xx do', async () => {
    const { f, monolith, service, call } = await setup({ breaker: { volumeThreshold: 5, errorThresholdPercentage: 50 } });
    const breaker = f.facade.table().upstreams.get('notification')!.breaker;
    service.behaviour = '404';
    for (let i = 0; i < 20; i++) expect((await call.read()).status).toBe(404);
    expect(breaker.closed).toBe(true);
    service.behaviour = '500';
    const first = await call.read();
    expect(first.status).toBe(500);
    expect(json(first).error).toMatchObject({ message: 'from the service' });
    for (let i = 0; i < 20 && !breaker.opened; i++) await call.read();
    expect(breaker.opened).toBe(true);
    expect(monolith.requests.filter((r) => r.method === 'GET')).toHaveLength(0);
  });

  it('aborts the upstream request when the client hangs up, without counting it against the service', async () => {
    const { f, notification, service } = await setup({ breaker: { volumeThreshold: 1 } });
    service.behaviour = 'hang';
    const upstreamClosed = new Promise<void>((resolve) => notification.server.once('request', (req: http.IncomingMessage) => req.socket.once('close', () => resolve())));
    const req = http.get(`${f.url}/things/1`, { agent: false });
    req.on('error', () => {});
    await waitFor(() => notification.requests.length === 1, 2_000, 'the request to reach the service');
    req.destroy();
    await upstreamClosed;
    const breaker = f.facade.table().upstreams.get('notification')!.breaker;
    expect(breaker.stats.failures).toBe(0);
    expect(breaker.closed).toBe(true);
    const metrics = await f.facade.metrics.registry.metrics();
    expect(metrics).toContain('strangler_facade_requests_total{route="things.get",upstream="notification",side="serve",code="499",service="facade"} 1');
  });

  it('times out idle time, not total time: an upload that keeps moving for longer than the timeout goes through', async () => {
    const { notification, f } = await setup();
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${f.url}/things/1`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      req.on('error', reject);
      let sent = 0;
      // 2 MiB (over the replay bound, so it streams) in 16 pieces 100 ms apart: 1.6 s against a 300 ms timeout.
      const timer = setInterval(() => {
        req.write(Buffer.alloc(128 * 1024, sent));
        if (++sent === 16) {
          clearInterval(timer);
          req.end();
        }
      }, 100);
    });
    expect(status).toBe(200);
    expect(notification.requests.at(-1)!.body.length).toBe(2 * 1024 * 1024);
  });

  it('streams a body larger than the replay bound and does not replay it after the service received it', async () => {
    const { monolith, service, f } = await setup();
    service.behaviour = 'reset';
    const big = Buffer.alloc(2 * 1024 * 1024, 'x');
    const res = await request(`${f.url}/things/1`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: big });
    expect(res.status).toBe(502);
    expect(monolith.requests).toHaveLength(0);
  });
});
