import request from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { loadMonolithConfig } from '../src/config.ts';
import { forwardQueueStats } from '../src/notifications/forward-queue.ts';
import { StandInStore, startStandIn } from './notification-stand-in.ts';
import { orderBody, placeOrder, registerUser, setupMonolith } from './helpers.ts';

const store = new StandInStore();
const server = await startStandIn(store);
const m = await setupMonolith({
  payments: { timeoutMs: 200 },
  notifications: {
    transport: 'grpc',
    grpc: { target: `127.0.0.1:${server.port}`, deadlineMs: 300, attempts: 3, breakerResetMs: 1_000, forwarder: { pollIntervalMs: 50 } },
  },
});
const forwarder = m.forwarder;
afterAll(() => forwarder.close());
const { app } = m;

const pending = () => m.db.knex('notification_requests').where({ status: 'pending' }).orderBy('created_at');
const sentFor = (orderId: string) => [...store.notifications.values()].filter((n) => (JSON.parse(n.dataJson) as { orderId?: string }).orderId === orderId);

describe('NOTIFICATION_TRANSPORT=grpc', () => {
  it('queues each notification in the order transaction and forwards exactly one Send per notification', async () => {
    const user = await registerUser(app);
    const placed = [];
    for (let i = 0; i < 4; i++) placed.push(await placeOrder(app, user));
    const declined = await placeOrder(app, user, orderBody('tok_declined'));
    expect(placed.map((r) => r.status)).toEqual([201, 201, 201, 201]);
    expect(declined.status).toBe(402);

    // Committed with the orders, not yet sent: the monolith is not the writer of record.
    const queued = await pending();
    expect(queued).toHaveLength(5);
    expect(queued.map((r) => r.data.orderId)).toEqual([...placed.map((r) => r.body.id), declined.body.error.details.orderId]);
    expect(queued[4]).toMatchObject({ user_id: user.id, channel: 'email', template: 'order_payment_failed', attempts: 0 });
    expect(await m.db.knex('notifications').where({ user_id: user.id })).toEqual([]);
    expect(await m.db.knex('notification_dispatch')).toEqual([]);
    expect(await m.db.knex('outbox').where({ aggregate_type: 'notification' })).toEqual([]);

    expect(await forwarder.drain()).toMatchObject({ forwarded: 5, rejected: 0, retrying: 0 });
    for (const row of queued) expect(store.calls.get(row.id)).toBe(1);
    for (const r of placed) expect(sentFor(r.body.id)).toEqual([expect.objectContaining({ userId: user.id, channel: 'email', template: 'order_placed' })]);
    expect(sentFor(declined.body.error.details.orderId)).toHaveLength(1);
    expect(await pending()).toEqual([]);
    expect(await forwarder.drain()).toMatchObject({ claimed: 0 });
  });

  it('forwards nothing for an order that rolled back', async () => {
    const user = await registerUser(app);
    const callsBefore = store.sendCalls();
    const timedOut = await placeOrder(app, user, orderBody('tok_timeout'));
    expect(timedOut.status).toBe(504);
    expect(await pending()).toEqual([]);
    expect(await forwarder.drain()).toMatchObject({ claimed: 0 });
    expect(store.sendCalls()).toBe(callsBefore);
  });

  it('retries a Send whose reply was lost (answered after the deadline) with the same id: one notification', async () => {
    const user = await registerUser(app);
    store.replyDelayMs = (_id, call) => (call === 1 ? 600 : 0);
    try {
      const order = await placeOrder(app, user);
      expect(order.status).toBe(201);
      const [row] = await pending();
      expect(await forwarder.drain()).toMatchObject({ forwarded: 1 });
      expect(store.calls.get(row.id)).toBe(2);
      expect(sentFor(order.body.id)).toHaveLength(1);
      expect(await pending()).toEqual([]);
    } finally {
      store.replyDelayMs = () => 0;
    }
  });

  it('marks a request the service refuses (4xx) failed with the error, counts it and does not retry it', async () => {
    const user = await registerUser(app);
    store.refusedUsers.add(user.id);
    const order = await placeOrder(app, user);
    expect(order.status).toBe(201);
    expect(await forwarder.drain()).toMatchObject({ rejected: 1, forwarded: 0 });
    const [row] = await m.db.knex('notification_requests').where({ user_id: user.id });
    expect(row).toMatchObject({ status: 'failed', attempts: 1, last_error: expect.stringContaining('VALIDATION_FAILED') });
    expect(row.failed_at).toBeInstanceOf(Date);
    expect(store.calls.get(row.id)).toBe(1);
    expect(await forwarder.drain()).toMatchObject({ claimed: 0 });
    expect(store.calls.get(row.id)).toBe(1);
    expect(await forwardQueueStats(m.db.knex)).toMatchObject({ pending: 0, failed: 1 });
    const metrics = (await request(app).get('/metrics')).text;
    expect(metrics).toMatch(/notification_forward_failures_total\{reason="rejected"[^}]*\} 1/);
    expect(metrics).toMatch(/notification_forward_queue_depth\{status="failed"[^}]*\} 1/);
    expect(metrics).toMatch(/grpc_client_breaker_state\{upstream="notification",state="closed"[^}]*\} 1/);
  });

  it('forwards in the background soon after the order commits', async () => {
    const user = await registerUser(app);
    forwarder.start();
    try {
      const started = Date.now();
      const order = await placeOrder(app, user);
      expect(order.status).toBe(201);
      // Sent, and the row gone once the forwarder's batch committed.
      for (const deadline = Date.now() + 5_000; !sentFor(order.body.id).length || (await pending()).length; ) {
        if (Date.now() > deadline) throw new Error('the forwarder did not forward the notification within 5 s');
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(sentFor(order.body.id)).toHaveLength(1);
    } finally {
      await forwarder.close();
    }
  });

  it('after a switch back to in-process (a rollback), requests queued before it still reach the service; new ones stay in the monolith', async () => {
    const user = await registerUser(app);
    const queuedOrder = await placeOrder(app, user);
    expect(queuedOrder.status).toBe(201);
    expect(await pending()).toHaveLength(1);
    // The monolith restarted with NOTIFICATION_TRANSPORT=in-process, the service still up.
    const back = m.variant({ payments: { timeoutMs: 200 }, notifications: { transport: 'in-process', grpc: { target: `127.0.0.1:${server.port}`, deadlineMs: 300, attempts: 3, breakerResetMs: 1_000 } } });
    try {
      expect(await back.forwarder.drain()).toMatchObject({ forwarded: 1 });
      expect(sentFor(queuedOrder.body.id)).toHaveLength(1);
      expect(await pending()).toEqual([]);
      const local = await placeOrder(back.app, user);
      expect(local.status).toBe(201);
      expect(await pending()).toEqual([]);
      expect(sentFor(local.body.id)).toEqual([]);
      expect(await m.db.knex('notifications').where({ user_id: user.id })).toHaveLength(1);
    } finally {
      await back.forwarder.close();
    }
  });
});

describe('gRPC transport configuration', () => {
  it('defaults to 127.0.0.1:50054 and reports every bad setting in one error that says what to set', () => {
    const ok = loadMonolithConfig({ NOTIFICATION_TRANSPORT: 'grpc' });
    expect(ok).toMatchObject({ NOTIFICATION_TRANSPORT: 'grpc', NOTIFICATION_GRPC_TARGET: '127.0.0.1:50054', NOTIFICATION_GRPC_DEADLINE_MS: 1_000 });
    expect(loadMonolithConfig({ NOTIFICATION_GRPC_TARGET: 'dns:///notification:50054' }).NOTIFICATION_GRPC_TARGET).toBe('dns:///notification:50054');
    expect(() => loadMonolithConfig({ NOTIFICATION_TRANSPORT: 'carrier-pigeon', NOTIFICATION_GRPC_TARGET: 'http://x', NOTIFICATION_GRPC_DEADLINE_MS: '0' })).toThrow(
      expect.objectContaining({
        code: 'CONFIG_INVALID',
        problems: [
          expect.stringMatching(/^NOTIFICATION_TRANSPORT="carrier-pigeon": must be one of in-process, grpc/),
          expect.stringMatching(/^NOTIFICATION_GRPC_TARGET="http:\/\/x": must be host:port/),
          expect.stringMatching(/^NOTIFICATION_GRPC_DEADLINE_MS="0"/),
        ],
      }),
    );
    expect(() => loadMonolithConfig({ NOTIFICATION_TRANSPORT: 'grpc', NOTIFICATION_GRPC_DEADLINE_MS: '5000', NOTIFICATION_GRPC_ATTEMPTS: '3' })).toThrow(/more than the 9 s shutdown allows/);
    // In-process too: its forwarder sends what a grpc period left queued.
    expect(() => loadMonolithConfig({ NOTIFICATION_TRANSPORT: 'in-process', NOTIFICATION_GRPC_DEADLINE_MS: '5000', NOTIFICATION_GRPC_ATTEMPTS: '3' })).toThrow(/more than the 9 s shutdown allows/);
  });
});
