import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { createTestDatabase, startServer } from '@strangler/platform/testing';
import { createApp } from '../src/index.ts';
import { ISO, TEST_SECRET, UUID, count, expectValidationProblems, notificationBody, outboxRows, oversizedBody, testUser, type TestUser } from './helpers.ts';

const db = await createTestDatabase('notification');
const server = await startServer(createApp({ db: db.knex, authSecret: TEST_SECRET }));
const api = () => request(server.url);

const send = (user: TestUser, extra: Record<string, unknown> = {}) => api().post('/api/notifications').set(user.auth).send(notificationBody(user, extra));

describe('POST /api/notifications', () => {
  it('queues the notification and answers 202 with it, exactly as the monolith does', async () => {
    const user = testUser();
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
    // jsonb order (shorter keys first), not the order the client sent
    expect(Object.keys(res.body.data)).toEqual(['code', 'firstName']);
    expect(await count(db.knex, 'notification_dispatch', { notification_id: res.body.id })).toBe(1);
  });

  it('appends exactly one notification.queued event with origin notification and the full state', async () => {
    const user = testUser();
    const created = (await send(user)).body;
    const events = await outboxRows(db.knex, { aggregate_id: created.id });
    expect(events).toEqual([
      {
        aggregate_type: 'notification',
        aggregate_id: created.id,
        aggregate_version: 1,
        event_type: 'notification.queued',
        payload: { ...created, providerMessageId: null, version: 1 },
        headers: expect.objectContaining({ origin: 'notification', schemaVersion: '1' }),
      },
    ]);
  });

  it('refuses to notify another user with 403 NOTIFICATION_RECIPIENT_FORBIDDEN and queues nothing', async () => {
    const [a, b] = [testUser(), testUser()];
    const res = await send(a, { userId: b.id });
    expect(res.status).toBe(403);
    expect(res.body).toEqual({
      error: { code: 'NOTIFICATION_RECIPIENT_FORBIDDEN', message: 'You may only send notifications to yourself: userId must be your own id.' },
    });
    expect(await count(db.knex, 'notifications', { user_id: b.id })).toBe(0);
  });

  it('lists every invalid field at once, with the monolith problem texts', async () => {
    const user = testUser();
    const res = await api().post('/api/notifications').set(user.auth).send({ userId: 'me', channel: 'fax', template: 'Has Spaces', data: [1], priority: 'high' });
    expect(res.status).toBe(400);
    // The monolith's answer to the same body, captured from it.
    expect(res.body).toEqual({
      error: {
        code: 'VALIDATION_FAILED',
        message: 'The request is invalid; see details for every problem.',
        details: [
          { field: 'userId', problem: 'Invalid UUID' },
          { field: 'channel', problem: 'Invalid option: expected one of "email"|"sms"|"push"' },
          { field: 'template', problem: 'Use 1-100 lower-case letters, digits, ".", "_" or "-", starting with a letter.' },
          { field: 'data', problem: 'Invalid input: expected record, received array' },
          { field: '(body)', problem: 'Unrecognized key: "priority"' },
        ],
      },
    });
    const empty = await api().post('/api/notifications').set(user.auth).send({});
    expectValidationProblems(empty.body, ['userId', 'channel', 'template', 'data']);
    const bigData = await send(user, { data: { blob: 'x'.repeat(9 * 1024) } });
    expect(bigData.body.error.details).toEqual([{ field: 'data', problem: 'Must be at most 8192 bytes as JSON.' }]);
    expect(await count(db.knex, 'notifications', { user_id: user.id })).toBe(0);
  });

  it('answers malformed JSON with 400, an oversized body with 413 and a missing or forged token with 401', async () => {
    const user = testUser();
    const malformed = await api().post('/api/notifications').set(user.auth).set('content-type', 'application/json').send('{"userId"');
    expect(malformed.status).toBe(400);
    expect(malformed.body).toEqual({ error: { code: 'MALFORMED_JSON', message: 'The request body is not valid JSON.' } });
    const big = await api().post('/api/notifications').set(user.auth).set('content-type', 'application/json').send(oversizedBody());
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('PAYLOAD_TOO_LARGE');
    const missing = await api().post('/api/notifications').send({});
    expect(missing.status).toBe(401);
    expect(missing.body).toEqual({ error: { code: 'UNAUTHENTICATED', message: 'Send a valid bearer token in the Authorization header.' } });
    const forged = await api().post('/api/notifications').set('Authorization', `${user.auth.Authorization}x`).send({});
    expect(forged.status).toBe(401);
    expect(forged.body).toEqual({ error: { code: 'UNAUTHENTICATED', message: 'The bearer token is invalid or expired; log in again.' } });
  });
});

describe('GET /api/notifications/:id', () => {
  it("returns the owner's notification and answers anyone else's, unknown and malformed ids with 404 NOTIFICATION_NOT_FOUND", async () => {
    const [a, b] = [testUser(), testUser()];
    const created = (await send(a)).body;
    const own = await api().get(`/api/notifications/${created.id}`).set(a.auth);
    expect(own.status).toBe(200);
    expect(own.body).toEqual(created);
    for (const [user, id] of [
      [b, created.id],
      [a, randomUUID()],
      [a, 'x'],
    ] as const) {
      const res = await api().get(`/api/notifications/${id}`).set(user.auth);
      expect(res.status).toBe(404);
      expect(res.body).toEqual({ error: { code: 'NOTIFICATION_NOT_FOUND', message: 'No such notification.' } });
    }
    expect((await api().get(`/api/notifications/${created.id}`)).status).toBe(401);
  });
});

describe('GET /api/notifications', () => {
  it("pages through the caller's notifications newest first", async () => {
    const [user, other] = [testUser(), testUser()];
    const created: Array<{ id: string; createdAt: string }> = [];
    for (let i = 0; i < 5; i++) created.push((await send(user, { template: `t${i}` })).body);
    await send(other);
    // newest first: createdAt desc, then id desc (two may share a millisecond)
    const ids = created.sort((x, y) => (x.createdAt === y.createdAt ? (x.id < y.id ? -1 : 1) : x.createdAt < y.createdAt ? -1 : 1)).map((n) => n.id);
    const first = await api().get('/api/notifications').query({ limit: 3 }).set(user.auth);
    expect(first.status).toBe(200);
    expect(first.body.items.map((n: { id: string }) => n.id)).toEqual(ids.slice(2).reverse());
    expect(first.body.nextCursor).toEqual(expect.any(String));
    const second = await api().get('/api/notifications').query({ limit: 3, cursor: first.body.nextCursor }).set(user.auth);
    expect(second.body.items.map((n: { id: string }) => n.id)).toEqual(ids.slice(0, 2).reverse());
    expect(second.body.nextCursor).toBeNull();
    const all = await api().get('/api/notifications').set(user.auth);
    expect(all.body).toEqual({ items: [...first.body.items, ...second.body.items], nextCursor: null });
  });

  it('refuses a bad limit or a cursor it did not issue with 400, listing both', async () => {
    const user = testUser();
    const bad = await api().get('/api/notifications').query({ limit: 'many', cursor: 'WyJ4Il0' }).set(user.auth);
    expect(bad.status).toBe(400);
    expect(bad.body.error.details).toEqual([
      { field: 'limit', problem: 'Invalid input: expected number, received NaN' },
      { field: 'cursor', problem: 'Not a cursor this API issued; pass nextCursor from the previous page.' },
    ]);
    expect((await api().get('/api/notifications').query({ limit: 0 }).set(user.auth)).body.error.details).toEqual([{ field: 'limit', problem: 'Too small: expected number to be >=1' }]);
    expect((await api().get('/api/notifications').query({ limit: 101 }).set(user.auth)).body.error.details).toEqual([{ field: 'limit', problem: 'Too big: expected number to be <=100' }]);
    expect((await api().get('/api/notifications')).status).toBe(401);
  });

  it('continues a listing from a cursor the monolith issued, and issues the same cursor itself', async () => {
    // Five notifications as the backfill copies them from the monolith (same ids and times).
    const user = testUser('3f0c4d5e-0000-4000-8000-00000000000a');
    const rows = Array.from({ length: 5 }, (_, i) => ({
      id: `3f0c4d5e-0000-4000-8000-00000000000${i + 1}`,
      user_id: user.id,
      channel: 'email',
      template: 'welcome',
      data: {},
      status: 'sent',
      version: 2,
      created_at: `2024-05-01T10:00:0${i}.000Z`,
      updated_at: `2024-05-01T10:00:0${i}.000Z`,
      sent_at: `2024-05-01T10:00:0${i}.000Z`,
    }));
    await db.knex('notifications').insert(rows);
    // nextCursor of the monolith's GET /api/notifications?limit=3 over these rows (after ...0003).
    const monolithCursor = 'WyIyMDI0LTA1LTAxVDEwOjAwOjAyLjAwMFoiLCIzZjBjNGQ1ZS0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDMiXQ';
    const rest = await api().get('/api/notifications').query({ limit: 3, cursor: monolithCursor }).set(user.auth);
    expect(rest.status).toBe(200);
    expect(rest.body.items.map((n: { id: string }) => n.id)).toEqual([rows[1]!.id, rows[0]!.id]);
    expect(rest.body.nextCursor).toBeNull();
    const first = await api().get('/api/notifications').query({ limit: 3 }).set(user.auth);
    expect(first.body.nextCursor).toBe(monolithCursor);
  });
});

describe('the rest of the edge', () => {
  it('answers unknown paths with 404 ROUTE_NOT_FOUND and echoes the request id', async () => {
    const res = await api().get('/api/orders').set('x-request-id', 'req-42');
    expect(res.status).toBe(404);
    expect(res.body).toEqual({ error: { code: 'ROUTE_NOT_FOUND', message: 'No such endpoint.' } });
    expect(res.headers['x-request-id']).toBe('req-42');
  });

  it('serves /healthz, /readyz (database) and Prometheus /metrics', async () => {
    expect((await api().get('/healthz')).body).toEqual({ status: 'ok' });
    expect((await api().get('/readyz')).body).toEqual({ status: 'ready', checks: { database: 'ok' } });
    const metrics = await api().get('/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.text).toMatch(/http_requests_total\{[^}]*route="\/api\/notifications"/);
  });
});
