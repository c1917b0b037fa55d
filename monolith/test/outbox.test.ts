import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import type { NotificationPort } from '../src/notifications/port.ts';
import { orderBody, outboxRows, placeOrder, registerUser, setupMonolith } from './helpers.ts';

const m = await setupMonolith({ notifications: { dispatcher: { retryBaseMs: 0 } } });
const { app } = m;

const countWhere = async (table: string, where: Record<string, string>) => Number((await m.db.knex(table).where(where).count({ n: '*' }))[0]!.n);

describe('writes and their outbox events', () => {
  it('roll back together when a step after the business writes fails: no order, payment, notification or event survives', async () => {
    let reached = false;
    const failing: NotificationPort = {
      async send(trx, req) {
        // The payment and the order, and their events, are already written in this transaction.
        const orderId = req.data.orderId as string;
        expect(await trx('orders').where({ id: orderId }).first()).toMatchObject({ status: 'placed' });
        expect(await trx('payments').where({ order_id: orderId }).first()).toMatchObject({ status: 'captured' });
        expect((await trx('outbox').where({ aggregate_id: orderId })).map((e) => e.event_type)).toEqual(['order.placed']);
        reached = true;
        throw new Error('notification transport exploded');
      },
    };
    const broken = m.variant({ notifications: { port: () => failing } });
    const user = await registerUser(broken.app);
    const res = await placeOrder(broken.app, user, orderBody(), { 'Idempotency-Key': 'atomic-1' });
    expect(reached).toBe(true);
    expect(res.status).toBe(500);
    expect(res.body).toEqual({ error: { code: 'INTERNAL', message: expect.any(String) } });
    expect(res.text).not.toMatch(/exploded|at |insert|select/i);
    for (const table of ['orders', 'payments', 'notifications', 'idempotency_keys']) expect(await countWhere(table, { user_id: user.id }), table).toBe(0);
    const events = await outboxRows(m.db.knex);
    expect(events.filter((e) => e.payload.userId === user.id)).toEqual([]);
    expect(events.filter((e) => e.aggregate_id === user.id).map((e) => e.event_type)).toEqual(['user.registered']);
    // The same key is free again: the failed attempt left nothing behind.
    expect((await placeOrder(app, user, orderBody(), { 'Idempotency-Key': 'atomic-1' })).status).toBe(201);
  });

  it('roll back together when the event cannot be written: the business row is gone too', async () => {
    const user = await registerUser(app);
    // Occupy the version the next write of this user will take, so its event insert fails.
    await m.db.knex('outbox').insert({ id: randomUUID(), aggregate_type: 'user', aggregate_id: user.id, aggregate_version: 2, event_type: 'user.updated', payload: {} });
    const res = await request(app).patch(`/api/users/${user.id}`).set(user.auth).send({ name: 'Never Saved' });
    expect(res.status).toBe(500);
    const row = await m.db.knex('users').where({ id: user.id }).first();
    expect(row).toMatchObject({ name: user.name, version: 1 });
  });

  it('give every synchronised entity exactly one event per write, with versions 1, 2, 3... carrying the full state', async () => {
    const user = await registerUser(app);
    const auth = user.auth;
    await request(app).patch(`/api/users/${user.id}`).set(auth).send({ name: 'Ada King' }).expect(200);
    await request(app).patch(`/api/users/${user.id}`).set(auth).send({ name: 'Ada, Countess of Lovelace' }).expect(200);
    const first = (await placeOrder(app, user)).body;
    const firstPayment = (await request(app).get('/api/payments').query({ orderId: first.id }).set(auth)).body.items[0];
    await request(app).post(`/api/payments/${firstPayment.id}/refunds`).set(auth).send({ amountCents: 500 }).expect(201);
    await request(app).post(`/api/orders/${first.id}/cancel`).set(auth).expect(200);
    const second = (await placeOrder(app, user, orderBody('tok_visa', [{ sku: 'MUG', quantity: 1, unitPriceCents: 900 }]))).body;
    const secondPayment = (await request(app).get('/api/payments').query({ orderId: second.id }).set(auth)).body.items[0];
    await request(app).post(`/api/payments/${secondPayment.id}/refunds`).set(auth).send({ amountCents: 100 }).expect(201);
    await request(app).post(`/api/payments/${secondPayment.id}/refunds`).set(auth).expect(201);
    const declined = (await placeOrder(app, user, orderBody('tok_declined'))).body.error.details;
    const direct = (await request(app).post('/api/notifications').set(auth).send({ userId: user.id, channel: 'push', template: 'hello', data: {} })).body;
    await m.dispatcher.drain();

    const events = (await outboxRows(m.db.knex)).filter((e) => e.aggregate_id === user.id || e.payload.userId === user.id);
    const byAggregate = new Map<string, typeof events>();
    for (const e of events) byAggregate.set(`${e.aggregate_type}:${e.aggregate_id}`, [...(byAggregate.get(`${e.aggregate_type}:${e.aggregate_id}`) ?? []), e]);
    const sequence = (type: string, id: string) => (byAggregate.get(`${type}:${id}`) ?? []).map((e) => `${e.aggregate_version} ${e.event_type}`);

    expect(sequence('user', user.id)).toEqual(['1 user.registered', '2 user.updated', '3 user.updated']);
    expect(sequence('order', first.id)).toEqual(['1 order.placed', '2 order.cancelled']);
    expect(sequence('payment', firstPayment.id)).toEqual(['1 payment.captured', '2 payment.refunded', '3 payment.refunded']);
    expect(sequence('order', second.id)).toEqual(['1 order.placed']);
    expect(sequence('payment', secondPayment.id)).toEqual(['1 payment.captured', '2 payment.refunded', '3 payment.refunded']);
    expect(sequence('order', declined.orderId)).toEqual(['1 order.payment_failed']);
    expect(sequence('payment', declined.paymentId)).toEqual(['1 payment.declined']);
    expect(sequence('notification', direct.id)).toEqual(['1 notification.queued', '2 notification.sent']);
    const notifications = [...byAggregate.keys()].filter((k) => k.startsWith('notification:'));
    expect(notifications).toHaveLength(5); // placed, cancelled, placed, payment failed, direct
    for (const key of notifications) expect(byAggregate.get(key)!.map((e) => e.event_type)).toEqual(['notification.queued', 'notification.sent']);

    // Each event carries the entity's full state at that version, and the last one matches the row.
    for (const list of byAggregate.values()) {
      for (const e of list) expect(e.payload.version).toBe(e.aggregate_version);
      const last = list[list.length - 1]!;
      const table = { user: 'users', order: 'orders', payment: 'payments', notification: 'notifications' }[last.aggregate_type]!;
      expect((await m.db.knex(table).where({ id: last.aggregate_id }).first()).version).toBe(last.aggregate_version);
    }
    const cancelled = byAggregate.get(`order:${first.id}`)![1]!.payload;
    expect(cancelled).toMatchObject({ status: 'cancelled', items: first.items, totalCents: 2_500, refund: { amountCents: 2_000 } });
    const refunded = byAggregate.get(`payment:${firstPayment.id}`)![2]!.payload;
    expect(refunded).toMatchObject({ status: 'refunded', refundedCents: 2_500, refund: { amountCents: 2_000 }, providerReference: expect.stringMatching(/^ch_/) });
    expect((refunded.refunds as unknown[]).length).toBe(2);
    expect(byAggregate.get(`user:${user.id}`)![2]!.payload).toMatchObject({ name: 'Ada, Countess of Lovelace', passwordHash: expect.stringMatching(/^scrypt\$/) });
    const headers = await m.db.knex('outbox').where({ aggregate_id: first.id }).pluck('headers');
    expect(headers[0]).toMatchObject({ origin: 'monolith', schemaVersion: '1', traceparent: expect.stringMatching(/^00-/), requestId: expect.any(String) });
  });
});
