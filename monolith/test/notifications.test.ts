import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { createLogger, createRegistry } from '@strangler/platform';
import { NotificationDispatcher } from '../src/notifications/dispatcher.ts';
import { FakeNotificationProvider, UNDELIVERABLE_TEMPLATE } from '../src/notifications/provider.ts';
import type { NotificationPort, NotificationRequest } from '../src/notifications/port.ts';
import { ISO, UUID, expectValidationProblems, outboxRows, oversizedBody, placeOrder, registerUser, setupMonolith, type TestUser } from './helpers.ts';

const provider = new FakeNotificationProvider();
const m = await setupMonolith({ notifications: { provider, dispatcher: { retryBaseMs: 0, maxAttempts: 3 } } });
const { app } = m;

const send = (user: TestUser, body: Record<string, unknown> = {}) =>
  request(app)
    .post('/api/notifications')
    .set(user.auth)
    .send({ userId: user.id, channel: 'sms', template: 'welcome', data: { firstName: 'Ada', code: 42 }, ...body });

describe('POST /api/notifications', () => {
  it('queues the notification and answers 202 with it', async () => {
    const user = await registerUser(app);
    const res = await send(user);
    expect(res.status).toBe(202);
    expect(res.body).toEqual({
      id: expect.stringMatching(UUID),
      userId: user.id,
      channel: 'sms',
      template: 'welcome',
      data: { code: 42, firstName: 'Ada' },
      status: 'queued',
      failureReason: null,
      createdAt: expect.stringMatching(ISO),
      updatedAt: res.body.createdAt,
      sentAt: null,
    });
    const events = await outboxRows(m.db.knex, { aggregate_id: res.body.id });
    expect(events).toEqual([
      { aggregate_type: 'notification', aggregate_id: res.body.id, aggregate_version: 1, event_type: 'notification.queued', payload: { ...res.body, providerMessageId: null, version: 1 } },
    ]);
  });

  it('refuses to notify another user with 403 and queues nothing', async () => {
    const [a, b] = [await registerUser(app), await registerUser(app)];
    const res = await send(a, { userId: b.id });
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe('NOTIFICATION_RECIPIENT_FORBIDDEN');
    expect(await m.db.knex('notifications').where({ user_id: b.id })).toEqual([]);
  });

  it('lists every invalid field at once', async () => {
    const user = await registerUser(app);
    const res = await request(app).post('/api/notifications').set(user.auth).send({ userId: 'me', channel: 'fax', template: 'Has Spaces', data: [1], priority: 'high' });
    expect(res.status).toBe(400);
    expectValidationProblems(res.body, ['userId', 'channel', 'template', 'data', '(body)']);
    const empty = await request(app).post('/api/notifications').set(user.auth).send({});
    expectValidationProblems(empty.body, ['userId', 'channel', 'template', 'data']);
    const bigData = await send(user, { data: { blob: 'x'.repeat(9 * 1024) } });
    expectValidationProblems(bigData.body, ['data']);
  });

  it('answers malformed JSON with 400, an oversized body with 413 and a missing or forged token with 401', async () => {
    const user = await registerUser(app);
    const malformed = await request(app).post('/api/notifications').set(user.auth).set('content-type', 'application/json').send('{"userId"');
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.code).toBe('MALFORMED_JSON');
    const big = await request(app).post('/api/notifications').set(user.auth).set('content-type', 'application/json').send(oversizedBody());
    expect(big.status).toBe(413);
    expect((await request(app).post('/api/notifications').send({})).status).toBe(401);
    expect((await request(app).post('/api/notifications').set('Authorization', `Bearer ${user.token}x`).send({})).status).toBe(401);
  });
});

describe('GET /api/notifications/:id and GET /api/notifications', () => {
  it("returns the owner's notification and answers anyone else's, unknown and malformed ids with 404 NOTIFICATION_NOT_FOUND", async () => {
    const [a, b] = [await registerUser(app), await registerUser(app)];
    const created = (await send(a)).body;
    const own = await request(app).get(`/api/notifications/${created.id}`).set(a.auth);
    expect(own.status).toBe(200);
    expect(own.body).toEqual(created);
    for (const [user, id] of [[b, created.id], [a, randomUUID()], [a, 'x']] as const) {
      const res = await request(app).get(`/api/notifications/${id}`).set(user.auth);
      expect(res.status).toBe(404);
      expect(res.body.error.code).toBe('NOTIFICATION_NOT_FOUND');
    }
  });

  it("pages through the caller's notifications newest first", async () => {
    const [user, other] = [await registerUser(app), await registerUser(app)];
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await send(user, { template: `t${i}` })).body.id);
    await send(other);
    const first = await request(app).get('/api/notifications').query({ limit: 3 }).set(user.auth);
    expect(first.status).toBe(200);
    expect(first.body.items).toHaveLength(3);
    expect(first.body.nextCursor).toEqual(expect.any(String));
    const second = await request(app).get('/api/notifications').query({ limit: 3, cursor: first.body.nextCursor }).set(user.auth);
    expect(second.body.items).toHaveLength(2);
    expect(second.body.nextCursor).toBeNull();
    const seen = [...first.body.items, ...second.body.items].map((n: { id: string }) => n.id);
    expect(new Set(seen)).toEqual(new Set(ids));
    const bad = await request(app).get('/api/notifications').query({ limit: 'many', cursor: 'WyJ4Il0' }).set(user.auth);
    expectValidationProblems(bad.body, ['limit', 'cursor']);
  });
});

describe('notification dispatcher', () => {
  it('delivers a queued notification once, marks it sent (version 2) and emits notification.sent', async () => {
    const user = await registerUser(app);
    const created = (await send(user, { channel: 'push' })).body;
    await m.dispatcher.drain();
    const res = await request(app).get(`/api/notifications/${created.id}`).set(user.auth);
    expect(res.body).toMatchObject({ status: 'sent', sentAt: expect.stringMatching(ISO), failureReason: null });
    expect(provider.deliveries.push.filter((d) => d.notificationId === created.id)).toHaveLength(1);
    expect(provider.calls.get(created.id)).toBe(1);
    const events = await outboxRows(m.db.knex, { aggregate_id: created.id });
    expect(events.map((e) => [e.event_type, e.aggregate_version])).toEqual([['notification.queued', 1], ['notification.sent', 2]]);
    expect(events[1]!.payload).toMatchObject({ status: 'sent', version: 2, attempts: 1, providerMessageId: `push_${created.id.replaceAll('-', '')}` });
    expect(await m.db.knex('notification_dispatch').where({ notification_id: created.id })).toEqual([]);
    await m.dispatcher.drain();
    expect(provider.calls.get(created.id)).toBe(1);
  });

  it('retries a failing delivery and marks it failed after maxAttempts, with one event for the final state only', async () => {
    const user = await registerUser(app);
    const created = (await send(user, { template: UNDELIVERABLE_TEMPLATE })).body;
    const first = await m.dispatcher.runOnce();
    expect(first.retried).toBeGreaterThanOrEqual(1);
    expect((await request(app).get(`/api/notifications/${created.id}`).set(user.auth)).body.status).toBe('queued');
    await m.dispatcher.drain();
    const res = await request(app).get(`/api/notifications/${created.id}`).set(user.auth);
    expect(res.body).toMatchObject({ status: 'failed', sentAt: null, failureReason: expect.stringMatching(/^Gave up after 3 attempts: sms gateway rejected/) });
    expect(provider.calls.get(created.id)).toBe(3);
    const events = await outboxRows(m.db.knex, { aggregate_id: created.id });
    expect(events.map((e) => [e.event_type, e.aggregate_version])).toEqual([['notification.queued', 1], ['notification.failed', 2]]);
    expect(events[1]!.payload).toMatchObject({ status: 'failed', attempts: 3 });
  });

  it('waits between retries: a retried delivery is not due again at once', async () => {
    const slowRetries = new NotificationDispatcher(m.db.knex, provider, createLogger('test'), createRegistry({}, { defaults: false }), { retryBaseMs: 60_000 });
    const user = await registerUser(app);
    const created = (await send(user, { template: UNDELIVERABLE_TEMPLATE })).body;
    await slowRetries.drain();
    const before = provider.calls.get(created.id);
    await slowRetries.drain();
    expect(provider.calls.get(created.id)).toBe(before);
    const row = await m.db.knex('notification_dispatch').where({ notification_id: created.id }).first();
    expect(row).toMatchObject({ attempts: 1, last_error: expect.stringMatching(/rejected/) });
    expect(row.next_attempt_at.getTime()).toBeGreaterThan(Date.now() + 50_000);
  });

  it('sends every notification exactly once when two dispatchers on separate pools race', async () => {
    const user = await registerUser(app);
    const racingProvider = new FakeNotificationProvider({ latencyMs: 2 });
    const ids = new Set<string>();
    await m.db.knex.transaction(async (trx) => {
      const rows = Array.from({ length: 150 }, (_, i) => ({ id: randomUUID(), user_id: user.id, channel: 'email', template: 'race', data: { i }, status: 'queued', created_at: new Date() }));
      await trx('notifications').insert(rows);
      await trx('notification_dispatch').insert(rows.map((r) => ({ notification_id: r.id })));
      rows.forEach((r) => ids.add(r.id));
    });
    const dispatchers = ['a', 'b'].map(
      (name) => new NotificationDispatcher(m.db.newPool(`dispatcher-${name}`), racingProvider, createLogger('test'), createRegistry({}, { defaults: false }), { batchSize: 7 }),
    );
    const stats = await Promise.all(dispatchers.map((d) => d.drain()));
    const delivered = racingProvider.allDeliveries().filter((d) => ids.has(d.notificationId));
    expect(delivered).toHaveLength(150);
    expect(new Set(delivered.map((d) => d.notificationId)).size).toBe(150);
    expect([...ids].map((id) => racingProvider.calls.get(id))).toEqual(Array(150).fill(1));
    expect(stats[0]!.sent + stats[1]!.sent).toBe(150);
    expect(stats.every((s) => s.sent > 0)).toBe(true);
    const statuses = await m.db.knex('notifications').whereIn('id', [...ids]).select('status', 'version');
    expect(statuses.every((s) => s.status === 'sent' && s.version === 2)).toBe(true);
    const sentEvents = await m.db.knex('outbox').whereIn('aggregate_id', [...ids]).where({ event_type: 'notification.sent' }).count({ n: '*' });
    expect(Number(sentEvents[0]!.n)).toBe(150);
  });

  it('runs in the background once started and stops after its batch in progress', async () => {
    const background = new NotificationDispatcher(m.db.knex, provider, createLogger('test'), createRegistry({}, { defaults: false }), { pollIntervalMs: 20 });
    const user = await registerUser(app);
    const created = (await send(user)).body;
    background.start();
    try {
      const deadline = Date.now() + 5_000;
      while ((await m.db.knex('notifications').where({ id: created.id }).first()).status !== 'sent' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    } finally {
      await background.stop();
    }
    expect((await m.db.knex('notifications').where({ id: created.id }).first()).status).toBe('sent');
  });
});

describe('NotificationPort (branch by abstraction)', () => {
  it('carries every notification the orders module asks for, in the order transaction', async () => {
    const requests: NotificationRequest[] = [];
    const recording = (inner: NotificationPort): NotificationPort => ({
      send: (trx, req) => {
        requests.push(req);
        return inner.send(trx, req);
      },
    });
    const variant = m.variant({ notifications: { port: recording } });
    const user = await registerUser(variant.app);
    const order = (await placeOrder(variant.app, user)).body;
    await request(variant.app).post(`/api/orders/${order.id}/cancel`).set(user.auth).expect(200);
    expect(requests).toEqual([
      { userId: user.id, channel: 'email', template: 'order_placed', data: { orderId: order.id, totalCents: 2_500, currency: 'EUR' } },
      { userId: user.id, channel: 'email', template: 'order_cancelled', data: { orderId: order.id, refundedCents: 2_500, currency: 'EUR' } },
    ]);
    expect((await m.db.knex('notifications').where({ user_id: user.id })).length).toBe(2);
  });
});
