import request from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { StandInStore, startStandIn } from './notification-stand-in.ts';
import { placeOrder, registerUser, setupMonolith } from './helpers.ts';

/** Polls `check` every 25 ms; fails after `timeoutMs` saying `what`. */
async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const store = new StandInStore();
let server = await startStandIn(store);
const port = server.port;
const m = await setupMonolith({
  notifications: {
    transport: 'grpc',
    grpc: {
      target: `127.0.0.1:${port}`,
      deadlineMs: 200,
      attempts: 2,
      breakerResetMs: 500,
      forwarder: { pollIntervalMs: 50, outageBaseMs: 50, outageMaxMs: 500, retryBaseMs: 50, retryMaxMs: 500 },
    },
  },
});
const forwarder = m.forwarder;
afterAll(() => forwarder.close());

const pendingCount = async () => Number((await m.db.knex('notification_requests').where({ status: 'pending' }).count<{ c: number }[]>({ c: '*' }))[0]!.c);
const orderIdOf = (dataJson: string) => (JSON.parse(dataJson) as { orderId: string }).orderId;

describe('when the notification service dies while orders are placed', () => {
  it('orders still succeed, the breaker opens, requests stay queued, and after a restart every notification arrives once', async () => {
    const user = await registerUser(m.app);
    forwarder.start();
    const orderIds: string[] = [];
    const place = async () => {
      const res = await placeOrder(m.app, user);
      expect(res.status).toBe(201);
      orderIds.push(res.body.id);
    };

    for (let i = 0; i < 5; i++) await place();
    await waitFor('the first orders to be forwarded', () => store.notifications.size === 5, 5_000);

    server.kill();
    for (let i = 0; i < 15; i++) await place();
    await waitFor('the breaker to open', () => forwarder.client.breaker.opened, 10_000);
    const metrics = (await request(m.app).get('/metrics')).text;
    expect(metrics).toMatch(/grpc_client_breaker_state\{upstream="notification",state="open"[^}]*\} 1/);
    // More orders while the breaker is open: still 201, and queued.
    for (let i = 0; i < 5; i++) await place();
    expect(await pendingCount()).toBe(20);
    expect((await request(m.app).get('/metrics')).text).toMatch(/notification_forward_queue_depth\{status="pending"[^}]*\} 20/);
    expect(store.notifications.size).toBe(5);

    server = await startStandIn(store, port);
    await waitFor('every queued notification to be forwarded', async () => (await pendingCount()) === 0, 20_000);
    expect(forwarder.client.breaker.closed).toBe(true);

    expect(orderIds).toHaveLength(25);
    const sent = [...store.notifications.values()].map((n) => orderIdOf(n.dataJson));
    expect(sent.sort()).toEqual([...orderIds].sort());
    expect(await m.db.knex('notification_requests')).toEqual([]);
  });
});
