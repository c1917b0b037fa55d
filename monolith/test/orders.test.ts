import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { ISO, UUID, expectValidationProblems, orderBody, outboxRows, oversizedBody, placeOrder, registerUser, setupMonolith, tokenFor } from './helpers.ts';

const m = await setupMonolith({ payments: { timeoutMs: 150 } });
const { app } = m;

const countFor = async (table: string, userId: string) => Number((await m.db.knex(table).where({ user_id: userId }).count({ n: '*' }))[0]!.n);

describe('POST /api/orders', () => {
  it('charges the payment, queues a notification and answers 201 with the order, in one transaction', async () => {
    const user = await registerUser(app);
    const res = await placeOrder(app, user, orderBody('tok_visa', [
      { sku: 'BOOK-1', quantity: 2, unitPriceCents: 1_250 },
      { sku: 'PEN.blue_2', quantity: 3, unitPriceCents: 99 },
    ]));
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      id: expect.stringMatching(UUID),
      userId: user.id,
      status: 'placed',
      currency: 'EUR',
      items: [
        { sku: 'BOOK-1', quantity: 2, unitPriceCents: 1_250 },
        { sku: 'PEN.blue_2', quantity: 3, unitPriceCents: 99 },
      ],
      totalCents: 2_797,
      createdAt: expect.stringMatching(ISO),
      updatedAt: res.body.createdAt,
      cancelledAt: null,
    });
    const get = await request(app).get(`/api/orders/${res.body.id}`).set(user.auth);
    expect(get.body).toEqual(res.body);
    const payments = await request(app).get('/api/payments').query({ orderId: res.body.id }).set(user.auth);
    expect(payments.body.items).toMatchObject([{ orderId: res.body.id, status: 'captured', amountCents: 2_797, refundedCents: 0, currency: 'EUR' }]);
    const notifications = await m.db.knex('notifications').where({ user_id: user.id });
    expect(notifications).toMatchObject([{ template: 'order_placed', channel: 'email', status: 'queued', data: { orderId: res.body.id, totalCents: 2_797, currency: 'EUR' } }]);
  });

  it('keeps a declined order as payment_failed with its declined payment and answers 402 PAYMENT_DECLINED', async () => {
    const user = await registerUser(app);
    const res = await placeOrder(app, user, orderBody('tok_declined'));
    expect(res.status).toBe(402);
    expect(res.body).toEqual({
      error: { code: 'PAYMENT_DECLINED', message: expect.any(String), details: { orderId: expect.stringMatching(UUID), paymentId: expect.stringMatching(UUID), declineCode: 'card_declined' } },
    });
    const { orderId, paymentId } = res.body.error.details;
    expect((await request(app).get(`/api/orders/${orderId}`).set(user.auth)).body).toMatchObject({ status: 'payment_failed', totalCents: 2_500 });
    expect((await request(app).get(`/api/payments/${paymentId}`).set(user.auth)).body).toMatchObject({ status: 'declined', declineCode: 'card_declined', refundedCents: 0 });
    expect((await m.db.knex('notifications').where({ user_id: user.id })).map((n) => n.template)).toEqual(['order_payment_failed']);
    const events = await outboxRows(m.db.knex, { aggregate_id: orderId });
    expect(events.map((e) => e.event_type)).toEqual(['order.payment_failed']);
  });

  it('declines an unknown payment token as invalid_token', async () => {
    const user = await registerUser(app);
    const res = await placeOrder(app, user, orderBody('tok_unknown'));
    expect(res.status).toBe(402);
    expect(res.body.error.details.declineCode).toBe('invalid_token');
  });

  it('answers a provider timeout with 504 PAYMENT_PROVIDER_TIMEOUT and keeps nothing: no order, payment, notification or event', async () => {
    const user = await registerUser(app);
    const before = (await outboxRows(m.db.knex)).length;
    const started = Date.now();
    const res = await placeOrder(app, user, orderBody('tok_timeout'));
    expect(res.status).toBe(504);
    expect(res.body.error.code).toBe('PAYMENT_PROVIDER_TIMEOUT');
    expect(Date.now() - started).toBeLessThan(5_000);
    for (const table of ['orders', 'payments', 'notifications', 'idempotency_keys']) expect(await countFor(table, user.id), table).toBe(0);
    expect((await outboxRows(m.db.knex)).length).toBe(before);
  });

  it('lists every problem of the body and the Idempotency-Key header at once', async () => {
    const user = await registerUser(app);
    const res = await placeOrder(
      app,
      user,
      { items: [{ sku: 'OK-1', quantity: 1, unitPriceCents: 100 }, { sku: '', quantity: 0, unitPriceCents: 1.5 }], currency: 'eur', paymentMethod: {}, coupon: 'FREE' },
      { 'Idempotency-Key': 'has spaces' },
    );
    expect(res.status).toBe(400);
    expectValidationProblems(res.body, ['items[1].sku', 'items[1].quantity', 'items[1].unitPriceCents', 'currency', 'paymentMethod.token', '(body)', 'header idempotency-key']);
    const empty = await placeOrder(app, user, { items: [], currency: 'EUR', paymentMethod: { token: 'tok_visa' } });
    expectValidationProblems(empty.body, ['items']);
    const none = await request(app).post('/api/orders').set(user.auth);
    expect(none.status).toBe(400);
    expect(await countFor('orders', user.id)).toBe(0);
  });

  it('answers malformed JSON with 400, an oversized body with 413 and a missing token with 401', async () => {
    const user = await registerUser(app);
    const malformed = await request(app).post('/api/orders').set(user.auth).set('content-type', 'application/json').send('{"items": [');
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.code).toBe('MALFORMED_JSON');
    const big = await request(app).post('/api/orders').set(user.auth).set('content-type', 'application/json').send(oversizedBody());
    expect(big.status).toBe(413);
    const anonymous = await request(app).post('/api/orders').send(orderBody());
    expect(anonymous.status).toBe(401);
  });

  it('refuses a token whose user does not exist with 401 and writes nothing', async () => {
    const ghost = randomUUID();
    const res = await request(app).post('/api/orders').set(tokenFor(ghost)).send(orderBody());
    expect(res.status).toBe(401);
    expect(await countFor('payments', ghost)).toBe(0);
  });
});

describe('Idempotency-Key', () => {
  it('replays the stored response for the same key and body, without a second order', async () => {
    const user = await registerUser(app);
    const key = randomUUID();
    const first = await placeOrder(app, user, orderBody(), { 'Idempotency-Key': key });
    const again = await placeOrder(app, user, orderBody(), { 'Idempotency-Key': key });
    expect(first.status).toBe(201);
    expect(again.status).toBe(201);
    expect(again.text).toBe(first.text);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    expect(await countFor('orders', user.id)).toBe(1);
    expect(await countFor('payments', user.id)).toBe(1);
  });

  it('replays a decline as the same 402', async () => {
    const user = await registerUser(app);
    const key = randomUUID();
    const first = await placeOrder(app, user, orderBody('tok_declined'), { 'Idempotency-Key': key });
    const again = await placeOrder(app, user, orderBody('tok_declined'), { 'Idempotency-Key': key });
    expect(again.status).toBe(402);
    expect(again.text).toBe(first.text);
    expect(await countFor('orders', user.id)).toBe(1);
  });

  it('refuses the same key with a different body with 409 IDEMPOTENCY_KEY_REUSED', async () => {
    const user = await registerUser(app);
    const key = randomUUID();
    await placeOrder(app, user, orderBody(), { 'Idempotency-Key': key });
    const res = await placeOrder(app, user, orderBody('tok_mastercard'), { 'Idempotency-Key': key });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(await countFor('orders', user.id)).toBe(1);
  });

  it('scopes keys per user', async () => {
    const [a, b] = [await registerUser(app), await registerUser(app)];
    const key = randomUUID();
    const ra = await placeOrder(app, a, orderBody(), { 'Idempotency-Key': key });
    const rb = await placeOrder(app, b, orderBody(), { 'Idempotency-Key': key });
    expect(rb.status).toBe(201);
    expect(rb.body.id).not.toBe(ra.body.id);
  });

  it('frees a key whose request timed out, so the retry places the order', async () => {
    const user = await registerUser(app);
    const key = randomUUID();
    const timedOut = await placeOrder(app, user, orderBody('tok_timeout'), { 'Idempotency-Key': key });
    expect(timedOut.status).toBe(504);
    const retried = await placeOrder(app, user, orderBody('tok_visa'), { 'Idempotency-Key': key });
    expect(retried.status).toBe(201);
  });

  it('places one order when the same key arrives several times at once', async () => {
    const user = await registerUser(app);
    const key = randomUUID();
    const responses = await Promise.all(Array.from({ length: 6 }, () => placeOrder(app, user, orderBody(), { 'Idempotency-Key': key })));
    expect(responses.map((r) => r.status)).toEqual(Array(6).fill(201));
    expect(new Set(responses.map((r) => r.body.id)).size).toBe(1);
    expect(responses.filter((r) => r.headers['idempotent-replayed'] === 'true')).toHaveLength(5);
    expect(await countFor('orders', user.id)).toBe(1);
    expect(await countFor('notifications', user.id)).toBe(1);
  });
});

describe('GET /api/orders/:id and GET /api/orders', () => {
  it("answers another user's order, an unknown id and a malformed id with 404 ORDER_NOT_FOUND", async () => {
    const [a, b] = [await registerUser(app), await registerUser(app)];
    const order = (await placeOrder(app, b)).body;
    for (const id of [order.id, randomUUID(), '123']) {
      const res = await request(app).get(`/api/orders/${id}`).set(a.auth);
      expect(res.status, id).toBe(404);
      expect(res.body.error.code).toBe('ORDER_NOT_FOUND');
    }
    expect((await request(app).get(`/api/orders/${order.id}`)).status).toBe(401);
  });

  it("pages through the caller's orders newest first with an opaque cursor, and only theirs", async () => {
    const [user, other] = [await registerUser(app), await registerUser(app)];
    const placed: string[] = [];
    for (let i = 0; i < 5; i++) placed.push((await placeOrder(app, user, orderBody('tok_visa', [{ sku: `SKU-${i}`, quantity: 1, unitPriceCents: 100 + i }]))).body.id);
    await placeOrder(app, other);
    const seen: string[] = [];
    let cursor: string | null = null;
    const sizes: number[] = [];
    do {
      const res: request.Response = await request(app).get('/api/orders').query(cursor ? { limit: 2, cursor } : { limit: 2 }).set(user.auth);
      expect(res.status).toBe(200);
      expect(Object.keys(res.body).sort()).toEqual(['items', 'nextCursor']);
      sizes.push(res.body.items.length);
      seen.push(...res.body.items.map((o: { id: string }) => o.id));
      cursor = res.body.nextCursor;
    } while (cursor && sizes.length < 10);
    expect(sizes).toEqual([2, 2, 1]);
    expect(new Set(seen)).toEqual(new Set(placed));
    const all = await request(app).get('/api/orders').set(user.auth);
    const listed = all.body.items as Array<{ id: string; createdAt: string; items: unknown }>;
    expect(listed.map((o) => o.id)).toEqual(seen);
    const key = (o: { id: string; createdAt: string }) => `${o.createdAt}|${o.id}`;
    expect(listed.map(key)).toEqual(listed.map(key).sort().reverse());
    expect(listed.find((o) => o.id === placed[4])!.items).toEqual([{ sku: 'SKU-4', quantity: 1, unitPriceCents: 104 }]);
    expect(all.body.nextCursor).toBeNull();
  });

  it('lists every problem of limit and cursor', async () => {
    const user = await registerUser(app);
    const res = await request(app).get('/api/orders').query({ limit: 0, cursor: 'garbage' }).set(user.auth);
    expect(res.status).toBe(400);
    expectValidationProblems(res.body, ['limit', 'cursor']);
    // A cursor of the right shape whose timestamp only Date.parse would take ("1": year 2001).
    for (const createdAt of ['1', '2024-02-30T00:00:00.000Z']) {
      const loose = Buffer.from(JSON.stringify([createdAt, randomUUID()])).toString('base64url');
      const looseRes = await request(app).get('/api/orders').query({ cursor: loose }).set(user.auth);
      expect(looseRes.status).toBe(400);
      expectValidationProblems(looseRes.body, ['cursor']);
    }
    const tooMany = await request(app).get('/api/orders').query({ limit: 101 }).set(user.auth);
    expectValidationProblems(tooMany.body, ['limit']);
  });
});

describe('POST /api/orders/:id/cancel', () => {
  it('refunds the payment, queues a notification, answers 200 with the cancelled order; a second cancel is 409', async () => {
    const user = await registerUser(app);
    const order = (await placeOrder(app, user)).body;
    const res = await request(app).post(`/api/orders/${order.id}/cancel`).set(user.auth);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ ...order, status: 'cancelled', updatedAt: expect.stringMatching(ISO), cancelledAt: res.body.updatedAt });
    const payment = (await request(app).get('/api/payments').query({ orderId: order.id }).set(user.auth)).body.items[0];
    expect(payment).toMatchObject({ status: 'refunded', refundedCents: 2_500, refunds: [{ amountCents: 2_500, paymentId: payment.id }] });
    expect((await m.db.knex('notifications').where({ user_id: user.id }).orderBy('created_at')).map((n) => [n.template, n.data])).toEqual([
      ['order_placed', { orderId: order.id, totalCents: 2_500, currency: 'EUR' }],
      ['order_cancelled', { orderId: order.id, refundedCents: 2_500, currency: 'EUR' }],
    ]);
    const again = await request(app).post(`/api/orders/${order.id}/cancel`).set(user.auth).send({});
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('ORDER_ALREADY_CANCELLED');
  });

  it('refunds only what a partial refund left', async () => {
    const user = await registerUser(app);
    const order = (await placeOrder(app, user)).body;
    const payment = (await request(app).get('/api/payments').query({ orderId: order.id }).set(user.auth)).body.items[0];
    await request(app).post(`/api/payments/${payment.id}/refunds`).set(user.auth).send({ amountCents: 1_000 }).expect(201);
    await request(app).post(`/api/orders/${order.id}/cancel`).set(user.auth).expect(200);
    const after = (await request(app).get(`/api/payments/${payment.id}`).set(user.auth)).body;
    expect(after).toMatchObject({ status: 'refunded', refundedCents: 2_500 });
    expect(after.refunds.map((r: { amountCents: number }) => r.amountCents)).toEqual([1_000, 1_500]);
  });

  it('refuses to cancel an order whose payment was declined with 409 ORDER_NOT_CANCELLABLE', async () => {
    const user = await registerUser(app);
    const { orderId } = (await placeOrder(app, user, orderBody('tok_declined'))).body.error.details;
    const res = await request(app).post(`/api/orders/${orderId}/cancel`).set(user.auth);
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('ORDER_NOT_CANCELLABLE');
  });

  it("answers cancelling another user's order with 404 and leaves it placed", async () => {
    const [a, b] = [await registerUser(app), await registerUser(app)];
    const order = (await placeOrder(app, b)).body;
    const res = await request(app).post(`/api/orders/${order.id}/cancel`).set(a.auth);
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe('ORDER_NOT_FOUND');
    expect((await request(app).get(`/api/orders/${order.id}`).set(b.auth)).body.status).toBe('placed');
  });

  it('refuses a body with fields', async () => {
    const user = await registerUser(app);
    const order = (await placeOrder(app, user)).body;
    const res = await request(app).post(`/api/orders/${order.id}/cancel`).set(user.auth).send({ reason: 'changed my mind' });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('VALIDATION_FAILED');
  });
});
