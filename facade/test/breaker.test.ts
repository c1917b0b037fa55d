import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { DEFAULT_BREAKER } from '../src/breakers.ts';
import { json, request, startFacade, startUpstream, table, waitFor } from './helpers.ts';

type Behaviour = 'ok' | 'reset' | 'hang';

/** A monolith (the fallback), a service whose behaviour the test sets, and a facade in front. */
async function setup(breaker: Record<string, number>) {
  const monolith = await startUpstream('monolith');
  const service = { behaviour: 'ok' as Behaviour };
  const notification = await startUpstream('notification', (req, res) => {
    if (service.behaviour === 'reset') return void req.socket.destroy();
    if (service.behaviour === 'hang') return; // accepted, never answered
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ upstream: 'notification' }));
  });
  const f = await startFacade({
    breaker: { timeoutMs: 5_000, errorThresholdPercentage: 50, resetTimeoutMs: 60_000, ...breaker },
    routesText: table({
      upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url } },
      routes: [{ id: 'things.get', match: { method: 'GET', path: '/things/:id' }, effects: 'read', serve: 'notification' }],
      default: 'monolith',
    }),
  });
  const breakerOf = () => f.facade.table().upstreams.get('notification')!.breaker;
  /** A client that gives up once the service has received its request (before any timeout). */
  const clientGivesUp = async () => {
    const seen = notification.requests.length;
    const upstreamClosed = new Promise<void>((resolve) => notification.server.once('request', (req: http.IncomingMessage) => req.socket.once('close', () => resolve())));
    const req = http.get(`${f.url}/things/1`, { agent: false });
    req.on('error', () => {});
    await waitFor(() => notification.requests.length > seen, 2_000, 'the request to reach the service');
    req.destroy();
    await upstreamClosed;
  };
  return { monolith, notification, service, f, breakerOf, clientGivesUp };
}

describe('breakers and clients that hang up', () => {
  it('keeps a client hanging up out of the statistics: neither a success nor a failure', async () => {
    const { service, breakerOf, clientGivesUp, f } = await setup({ volumeThreshold: 2 });
    service.behaviour = 'hang';
    for (let i = 0; i < 4; i++) await clientGivesUp();
    expect(breakerOf().stats).toMatchObject({ fires: 0, successes: 0, failures: 0 });
    // Two real failures now open the breaker (2 of 2): had the hang-ups counted as successes,
    // the error rate would be 2 of 6 and it would stay closed.
    service.behaviour = 'reset';
    for (let i = 0; i < 2; i++) expect(json(await request(`${f.url}/things/1`))).toMatchObject({ upstream: 'monolith' });
    expect(breakerOf().opened).toBe(true);
    expect(breakerOf().stats).toMatchObject({ successes: 0, failures: 2 });
  });

  it('stays half-open when the trial request is abandoned by its client, and lets the next request try', async () => {
    const { notification, service, breakerOf, clientGivesUp, f } = await setup({ volumeThreshold: 1, resetTimeoutMs: 200 });
    service.behaviour = 'reset';
    expect(json(await request(`${f.url}/things/1`))).toMatchObject({ upstream: 'monolith' });
    expect(breakerOf().opened).toBe(true);
    await waitFor(() => breakerOf().halfOpen, 2_000, 'the breaker to go half-open');

    service.behaviour = 'hang';
    await clientGivesUp(); // the single trial request: its client went away, so it tells nothing
    expect(breakerOf().halfOpen).toBe(true);
    expect(breakerOf().closed).toBe(false);

    // The next request is the new trial: it reaches the service and its success closes the breaker.
    service.behaviour = 'ok';
    const seen = notification.requests.length;
    expect(json(await request(`${f.url}/things/1`))).toMatchObject({ upstream: 'notification' });
    expect(notification.requests.length).toBe(seen + 1);
    expect(breakerOf().closed).toBe(true);
  });

  it('reopens from half-open when the next trial fails after an abandoned one', async () => {
    const { service, breakerOf, clientGivesUp, f } = await setup({ volumeThreshold: 1, resetTimeoutMs: 200 });
    service.behaviour = 'reset';
    await request(`${f.url}/things/1`);
    await waitFor(() => breakerOf().halfOpen, 2_000, 'the breaker to go half-open');
    service.behaviour = 'hang';
    await clientGivesUp();
    service.behaviour = 'reset';
    expect(json(await request(`${f.url}/things/1`))).toMatchObject({ upstream: 'monolith' });
    expect(breakerOf().opened).toBe(true);
  });

  it('times out an upstream that does not answer within 10 s by default, before most clients give up', () => {
    expect(DEFAULT_BREAKER.timeoutMs).toBe(10_000);
  });
});
