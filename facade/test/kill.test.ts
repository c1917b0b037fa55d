import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { startFacade, startUpstream, table, waitFor } from './helpers.ts';

interface Outcome {
  at: number;
  status: number;
  upstream: string | null;
  id: string;
}

/** Runs `workers` sequential clients for `ms`, each request with its own id. */
async function load(url: string, method: string, path: string, workers: number, ms: number, prefix: string): Promise<Outcome[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: workers });
  const out: Outcome[] = [];
  const deadline = performance.now() + ms;
  let n = 0;
  const one = (id: string) =>
    new Promise<Outcome>((resolve) => {
      const req = http.request(`${url}${path}`, { method, agent, headers: { 'x-request-id': id, 'content-type': 'application/json' } }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => {
          let upstream: string | null = null;
          try {
            upstream = (JSON.parse(body) as { upstream?: string }).upstream ?? null;
          } catch {
            // an error body
          }
          resolve({ at: performance.now(), status: res.statusCode!, upstream, id });
        });
      });
      req.setTimeout(5_000, () => req.destroy(new Error('timeout')));
      req.on('error', () => resolve({ at: performance.now(), status: 0, upstream: null, id }));
      req.end(method === 'POST' ? JSON.stringify({ id }) : undefined);
    });
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (performance.now() < deadline) out.push(await one(`${prefix}-${n++}`));
    }),
  );
  agent.destroy();
  return out;
}

describe('killing a service under load', () => {
  it('keeps read routes answering from the monolith and never applies an unsafe request twice', async () => {
    const applied = { monolith: new Map<string, number>(), notification: new Map<string, number>() };
    const pendingUnsafe = new Set<string>();
    const app = (name: 'monolith' | 'notification') => async (req: http.IncomingMessage & { body: Buffer }, res: http.ServerResponse) => {
      const id = String(req.headers['x-request-id']);
      if (req.method === 'POST') {
        applied[name].set(id, (applied[name].get(id) ?? 0) + 1);
        pendingUnsafe.add(id);
        await new Promise((r) => setTimeout(r, 15)); // applied, not yet answered: a kill now loses the answer
        pendingUnsafe.delete(id);
      }
      res.writeHead(req.method === 'POST' ? 201 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ upstream: name }));
    };
    const monolith = await startUpstream('monolith', app('monolith'));
    const notification = await startUpstream('notification', app('notification'));
    const f = await startFacade({
      breaker: { timeoutMs: 2_000, volumeThreshold: 5, errorThresholdPercentage: 50, resetTimeoutMs: 60_000, rollingWindowMs: 10_000 },
      routesText: table({
        upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url } },
        routes: [
          { id: 'notifications.get', match: { method: 'GET', path: '/api/notifications/:id' }, effects: 'read', serve: 'notification' },
          { id: 'notifications.send', match: { method: 'POST', path: '/api/notifications' }, effects: 'unsafe', serve: 'notification' },
        ],
        default: 'monolith',
      }),
    });
    let openedAt = Infinity;
    f.facade.on('facade:breaker:open', ({ upstream }: { upstream: string }) => {
      if (upstream === 'notification') openedAt = Math.min(openedAt, performance.now());
    });

    const reads = load(f.url, 'GET', '/api/notifications/1', 6, 2_500, 'r');
    const writes = load(f.url, 'POST', '/api/notifications', 4, 2_500, 'w');
    await new Promise((r) => setTimeout(r, 500));
    // Kill it while unsafe requests are applied but not answered yet.
    await waitFor(() => pendingUnsafe.size > 0, 2_000, 'an unsafe request in flight');
    const killedAt = performance.now();
    notification.server.close();
    notification.server.closeAllConnections();
    const [readOutcomes, writeOutcomes] = await Promise.all([reads, writes]);

    expect(openedAt).toBeLessThan(Infinity);
    // Reads: the service before the kill, the monolith after; no 5xx, before or after the breaker opened.
    expect(readOutcomes.length).toBeGreaterThan(50);
    expect(readOutcomes.filter((o) => o.status !== 200)).toEqual([]);
    expect(readOutcomes.filter((o) => o.at > openedAt).every((o) => o.upstream === 'monolith')).toBe(true);
    expect(readOutcomes.some((o) => o.at < killedAt && o.upstream === 'notification')).toBe(true);

    // Writes: each applied at most once across both upstreams.
    const twice = [...applied.notification.keys()].filter((id) => applied.monolith.has(id) || applied.notification.get(id)! > 1);
    expect(twice).toEqual([]);
    expect([...applied.monolith.values()].every((n) => n === 1)).toBe(true);
    for (const o of writeOutcomes) {
      const times = (applied.monolith.get(o.id) ?? 0) + (applied.notification.get(o.id) ?? 0);
      if (o.status === 201) expect(times, o.id).toBe(1);
      else expect([502, 504], o.id).toContain(o.status); // maybe applied by the service, never replayed
    }
    // The kill cut at least one applied request: the client got a 502 and the monolith never saw it.
    const cut = writeOutcomes.filter((o) => o.status === 502 && applied.notification.has(o.id));
    expect(cut.length).toBeGreaterThan(0);
    // Once the breaker is open, writes go to the monolith (nothing is sent to the service).
    expect(writeOutcomes.filter((o) => o.at > openedAt + 50).every((o) => o.status === 201 && o.upstream === 'monolith')).toBe(true);
  }, 30_000);
});
