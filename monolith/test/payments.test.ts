import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { ISO, UUID, expectValidationProblems, orderBody, placeOrder, registerUser, setupMonolith, type TestUser } from './helpers.ts';

const m = await setupMonolith();
const { app } = m;

async function paidOrder(user: TestUser, token = 'tok_visa') {
  const placed = await placeOrder(app, user, orderBody(token));
  const orderId: string = placed.status === 201 ? placed.body.id : placed.body.error.details.orderId;
  const payment = (await request(app).get('/api/payments').query({ orderId }).set(user.auth)).body.items[0];
  return { orderId, payment };
}

describe('GET /api/payments/:id and GET /api/payments?orderId', () => {
  it("returns the owner's payment with its refunds", async () => {
    const user = await registerUser(app);
    const { orderId, payment } = await paidOrder(user);
    expect(payment).toEqual({
      id: expect.stringMatching(UUID),
      orderId,
      userId: user.id,
      status: 'captured',
      amountCents: 2_500,
      refundedCents: 0,
      currency: 'EUR',
      declineCode: null,
      refunds: [],
      createdAt: expect.stringMatching(ISO),
      updatedAt: payment.createdAt,
    });
    const res = await request(app).get(`/api/payments/${payment.id}`).set(user.auth);
    expect(res.status).toBe(200);
    expect(res.body).toEqual(payment);
    expect(res.body).not.toHaveProperty('providerReference');
  });

  it("answers another user's payment, an unknown id and a malformed id with 404 PAYMENT_NOT_FOUND", async () => {
    const [a, b] = [await registerUser(app), await registerUser(app)];
    const { payment } = await paidOrder(b);
    for (const id of [payment.id, randomUUID(), 'pay_1']) {
      const res = await request(app).get(`/api/payments/${id}`).set(a.auth);
      expect(res.status, id).toBe(404);
      expect(res.body.error.code).toBe('PAYMENT_NOT_FOUND');
    }
  });

  it("lists no payments for another user's order", async () => {
    const [a, b] = [await registerUser(app), await registerUser(app)];
    const { orderId } = await paidOrder(b);
    const res = await request(app).get('/api/payments').query({ orderId }).set(a.auth);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ items: [] });
  });

  it('requires a valid orderId and a token', async () => {
    const user = await registerUser(app);
    const missing = await request(app).get('/api/payments').set(user.auth);
    expect(missing.status).toBe(400);
    expectValidationProblems(missing.body, ['orderId']);
    const malformed = await request(app).get('/api/payments').query({ orderId: 'nope' }).set(user.auth);
    expectValidationProblems(malformed.body, ['orderId']);
    expect((await request(app).get('/api/payments').query({ orderId: randomUUID() })).status).toBe(401);
  });
});

describe('POST /api/payments/:id/refunds', () => {
  it('refunds partially, then the rest by default, then refuses with 409 PAYMENT_NOT_REFUNDABLE', async () => {
    const user = await registerUser(app);
    const { payment } = await paidOrder(user);
    const partial = await request(app).post(`/api/payments/${payment.id}/refunds`).set(user.auth).send({ amountCents: 700 });
    expect(partial.status).toBe(201);
    expect(partial.body).toEqual({ id: expect.stringMatching(UUID), paymentId: payment.id, amountCents: 700, createdAt: expect.stringMatching(ISO) });
    expect((await request(app).get(`/api/payments/${payment.id}`).set(user.auth)).body).toMatchObject({ status: 'partially_refunded', refundedCents: 700, refunds: [partial.body] });
    const rest = await request(app).post(`/api/payments/${payment.id}/refunds`).set(user.auth);
    expect(rest.status).toBe(201);
    expect(rest.body.amountCents).toBe(1_800);
    expect((await request(app).get(`/api/payments/${payment.id}`).set(user.auth)).body).toMatchObject({ status: 'refunded', refundedCents: 2_500 });
    const more = await request(app).post(`/api/payments/${payment.id}/refunds`).set(user.auth).send({});
    expect(more.status).toBe(409);
    expect(more.body.error).toMatchObject({ code: 'PAYMENT_NOT_REFUNDABLE', details: { refundableCents: 0 } });
  });

  it('refuses to refund more than is left with 409 REFUND_EXCEEDS_PAYMENT and changes nothing', async () => {
    const user = await registerUser(app);
    const { payment } = await paidOrder(user);
    await request(app).post(`/api/payments/${payment.id}/refunds`).set(user.auth).send({ amountCents: 2_000 }).expect(201);
    const res = await request(app).post(`/api/payments/${payment.id}/refunds`).set(user.auth).send({ amountCents: 501 });
    expect(res.status).toBe(409);
    expect(res.body.error).toMatchObject({ code: 'REFUND_EXCEEDS_PAYMENT', details: { refundableCents: 500 } });
    expect((await request(app).get(`/api/payments/${payment.id}`).set(user.auth)).body.refundedCents).toBe(2_000);
  });

  it('never refunds more than the payment when refunds race', async () => {
    const user = await registerUser(app);
    const { payment } = await paidOrder(user);
    const results = await Promise.all(Array.from({ length: 5 }, () => request(app).post(`/api/payments/${payment.id}/refunds`).set(user.auth).send({ amountCents: 1_000 })));
    expect(results.map((r) => r.status).sort()).toEqual([201, 201, 409, 409, 409]);
    expect((await request(app).get(`/api/payments/${payment.id}`).set(user.auth)).body.refundedCents).toBe(2_000);
  });

  it('refuses to refund a declined payment with 409 PAYMENT_NOT_REFUNDABLE', async () => {
    const user = await registerUser(app);
    const { payment } = await paidOrder(user, 'tok_declined');
    expect(payment.status).toBe('declined');
    const res = await request(app).post(`/api/payments/${payment.id}/refunds`).set(user.auth);
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('PAYMENT_NOT_REFUNDABLE');
  });

  it('lists every problem of the body, and answers malformed JSON with 400', async () => {
    const user = await registerUser(app);
    const { payment } = await paidOrder(user);
    for (const body of [{ amountCents: 0 }, { amountCents: 10.5 }, { amountCents: '100' }]) {
      const res = await request(app).post(`/api/payments/${payment.id}/refunds`).set(user.auth).send(body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expectValidationProblems(res.body, ['amountCents']);
    }
    const extra = await request(app).post(`/api/payments/${payment.id}/refunds`).set(user.auth).send({ amountCents: -1, reason: 'x' });
    expectValidationProblems(extra.body, ['amountCents', '(body)']);
    const malformed = await request(app).post(`/api/payments/${payment.id}/refunds`).set(user.auth).set('content-type', 'application/json').send('{');
    expect(malformed.body.error.code).toBe('MALFORMED_JSON');
  });

  it("answers a refund of another user's payment with 404 and refunds nothing", async () => {
    const [a, b] = [await registerUser(app), await registerUser(app)];
    const { payment } = await paidOrder(b);
    const res = await request(app).post(`/api/payments/${payment.id}/refunds`).set(a.auth).send({ amountCents: 100 });
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe('PAYMENT_NOT_FOUND');
    expect((await request(app).get(`/api/payments/${payment.id}`).set(b.auth)).body.refundedCents).toBe(0);
    expect((await request(app).post(`/api/payments/${randomUUID()}/refunds`).set(a.auth)).status).toBe(404);
  });
});
