import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { signToken } from '@strangler/platform';
import { cohortBucket, inCanary } from '../src/index.ts';
import { startFacade, startUpstream, table } from './helpers.ts';

const KEYS = Array.from({ length: 10_000 }, (_, i) => `user-${i}`);

/** Sends one request per key with bounded concurrency over keep-alive; returns the side each key landed on. */
async function sides(url: string, headersFor: (key: string) => http.OutgoingHttpHeaders): Promise<Map<string, string>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const out = new Map<string, string>();
  let next = 0;
  const worker = async () => {
    while (next < KEYS.length) {
      const key = KEYS[next++]!;
      const side = await new Promise<string>((resolve, reject) => {
        const req = http.get(`${url}/api/notifications`, { agent, headers: headersFor(key) }, (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve(JSON.parse(body).upstream as string));
        });
        req.setTimeout(5_000, () => req.destroy(new Error('timed out')));
        req.on('error', reject);
      });
      out.set(key, side);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  agent.destroy();
  return out;
}

const share = (m: Map<string, string>) => [...m.values()].filter((s) => s === 'notification').length / m.size;

describe('canary cohorts', () => {
  it('keeps each of 10,000 users on the same side across requests and as the share grows from 5% to 10%', async () => {
    const monolith = await startUpstream('monolith');
    const notification = await startUpstream('notification');
    const f = await startFacade({
      routesText: table({
        upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url } },
        routes: [{ id: 'notifications.list', match: { method: 'GET', path: '/api/notifications' }, effects: 'read', serve: 'monolith', canary: { to: 'notification', percent: 5, stickyBy: 'user' } }],
        default: 'monolith',
      }),
    });
    const secret = 'strangler-dev-secret-change-me-in-production';
    const tokens = new Map(KEYS.map((k) => [k, signToken(secret, k, 3600)]));
    const byToken = (key: string) => ({ authorization: `Bearer ${tokens.get(key)}` });

    const at5 = await sides(f.url, byToken);
    expect(share(at5)).toBeGreaterThan(0.04);
    expect(share(at5)).toBeLessThan(0.06);
    const again = await sides(f.url, byToken);
    expect([...again].filter(([k, s]) => at5.get(k) !== s)).toEqual([]);

    await f.facade.changeRoute('notifications.list', { canary: { percent: 10 } }, { who: 'test', why: 'ramp to 10%' });
    const at10 = await sides(f.url, byToken);
    expect(share(at10)).toBeGreaterThan(0.09);
    expect(share(at10)).toBeLessThan(0.11);
    const leftTheCanary = [...at5].filter(([k, s]) => s === 'notification' && at10.get(k) !== 'notification');
    expect(leftTheCanary).toEqual([]);
  }, 60_000);

  it('nests cohorts at every percentage and gives routes independent cohorts', () => {
    let previous = new Set<string>();
    for (const percent of [0.5, 1, 5, 10, 25, 50, 75, 100]) {
      const cohort = new Set(KEYS.filter((k) => inCanary('orders.get', k, percent)));
      for (const k of previous) expect(cohort.has(k)).toBe(true);
      expect(Math.abs(cohort.size / KEYS.length - percent / 100)).toBeLessThan(0.015);
      previous = cohort;
    }
    const a = KEYS.filter((k) => cohortBucket('orders.get', k) < 1_000);
    const b = new Set(KEYS.filter((k) => cohortBucket('payments.get', k) < 1_000));
    const overlap = a.filter((k) => b.has(k)).length / a.length;
    expect(overlap).toBeGreaterThan(0.05);
    expect(overlap).toBeLessThan(0.15);
  });

  it('splits requests without a key at random', () => {
    let n = 0;
    for (let i = 0; i < 10_000; i++) if (inCanary('r', undefined, 30)) n++;
    expect(n / 10_000).toBeGreaterThan(0.27);
    expect(n / 10_000).toBeLessThan(0.33);
  });
});
