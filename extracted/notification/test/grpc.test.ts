import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { bindGrpcServer, createLogger, createRegistry, grpc, ResilientGrpcClient, shutdownGrpcServer } from '@strangler/platform';
import { createTestDatabase } from '@strangler/platform/testing';
import {
  createGrpcServer,
  FakeNotificationProvider,
  loadNotificationProto,
  NotificationDispatcher,
  NotificationService,
  type ListByUserResponse,
  type NotificationMessage,
  type SendRequest,
} from '../src/index.ts';
import { ISO, count, outboxRows, waitFor } from './helpers.ts';

const db = await createTestDatabase('notification');
const servicePool = db.newPool('grpc-service');
const server = createGrpcServer(new NotificationService(servicePool), { maxWorkMs: 1_000 });
const port = await bindGrpcServer(server, 0);
afterAll(() => shutdownGrpcServer(server, 1_000));

const NotificationClient = loadNotificationProto();
function newClient(options: { deadlineMs?: number } = {}) {
  const client = new ResilientGrpcClient(new NotificationClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure()), 'notification', { attempts: 1, deadlineMs: 5_000, ...options });
  afterAll(() => client.close());
  return client;
}
const client = newClient();
const sendReq = (extra: Partial<SendRequest> = {}): SendRequest => ({
  id: randomUUID(),
  userId: randomUUID(),
  channel: 'sms',
  template: 'order_placed',
  dataJson: JSON.stringify({ orderId: 'o-1', totalCents: 2_500 }),
  ...extra,
});
const callSend = (req: SendRequest) => client.call<SendRequest, NotificationMessage>('Send', req);

const provider = new FakeNotificationProvider(db.knex);
const dispatcher = new NotificationDispatcher(db.knex, provider, createLogger('test'), createRegistry({}, { defaults: false }));

describe('gRPC Send', () => {
  it('queues the notification under the caller-chosen id and answers with it', async () => {
    const req = sendReq();
    const sent = await callSend(req);
    expect(sent).toEqual({
      id: req.id,
      userId: req.userId,
      channel: 'sms',
      template: 'order_placed',
      dataJson: JSON.stringify({ orderId: 'o-1', totalCents: 2_500 }),
      status: 'queued',
      failureReason: '',
      createdAt: expect.stringMatching(ISO),
      updatedAt: sent.createdAt,
      sentAt: '',
    });
    const events = await outboxRows(db.knex, { aggregate_id: req.id });
    expect(events.map((e) => [e.event_type, e.aggregate_version, e.headers.origin])).toEqual([['notification.queued', 1, 'notification']]);
  });

  it('is idempotent on id: retries return the same notification, with no second event and no second delivery', async () => {
    const req = sendReq();
    const first = await callSend(req);
    const retries = await Promise.all(Array.from({ length: 8 }, () => callSend(req)));
    expect(retries).toEqual(Array(8).fill(first));
    expect(await count(db.knex, 'notifications', { id: req.id })).toBe(1);
    expect(await count(db.knex, 'notification_dispatch', { notification_id: req.id })).toBe(1);
    await dispatcher.drain();
    const afterDelivery = await callSend(req);
    expect(afterDelivery).toMatchObject({ id: req.id, status: 'sent', sentAt: expect.stringMatching(ISO) });
    await dispatcher.drain();
    expect((await outboxRows(db.knex, { aggregate_id: req.id })).map((e) => e.event_type)).toEqual(['notification.queued', 'notification.sent']);
    expect((await provider.calls([req.id])).map((c) => c.outcome)).toEqual(['delivered']);
  });

  it('answers the same id with different content ALREADY_EXISTS NOTIFICATION_ID_CONFLICT and changes nothing', async () => {
    const req = sendReq();
    await callSend(req);
    const err = await callSend({ ...req, template: 'something_else' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NOTIFICATION_ID_CONFLICT', status: 409, grpcCode: grpc.status.ALREADY_EXISTS, details: { id: req.id } });
    expect(await count(db.knex, 'outbox', { aggregate_id: req.id })).toBe(1);
  });

  it('validates like the HTTP API and answers INVALID_ARGUMENT listing every problem', async () => {
    const err = await callSend({ id: 'nope', userId: 'me', channel: 'fax', template: 'Has Spaces', dataJson: '[1]' }).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'VALIDATION_FAILED',
      status: 400,
      grpcCode: grpc.status.INVALID_ARGUMENT,
      details: [
        { field: 'userId', problem: 'Invalid UUID' },
        { field: 'channel', problem: 'Invalid option: expected one of "email"|"sms"|"push"' },
        { field: 'template', problem: 'Use 1-100 lower-case letters, digits, ".", "_" or "-", starting with a letter.' },
        { field: 'data', problem: 'Invalid input: expected record, received array' },
        { field: 'id', problem: 'Invalid UUID' },
      ],
    });
    for (const dataJson of ['not json', '', JSON.stringify({ blob: 'x'.repeat(9 * 1024) })]) {
      await expect(callSend(sendReq({ dataJson }))).rejects.toMatchObject({ code: 'VALIDATION_FAILED', details: [{ field: 'data', problem: expect.any(String) }] });
    }
    expect(await count(db.knex, 'notifications', { template: 'Has Spaces' })).toBe(0);
  });
});

describe('gRPC Get and ListByUser', () => {
  it("returns the caller's notification and answers another user's, unknown and malformed ids NOT_FOUND", async () => {
    const req = sendReq();
    const sent = await callSend(req);
    expect(await client.call('Get', { id: req.id, userId: req.userId })).toEqual(sent);
    for (const get of [
      { id: req.id, userId: randomUUID() },
      { id: randomUUID(), userId: req.userId },
      { id: 'x', userId: req.userId },
    ]) {
      await expect(client.call('Get', get)).rejects.toMatchObject({ code: 'NOTIFICATION_NOT_FOUND', status: 404, grpcCode: grpc.status.NOT_FOUND });
    }
    await expect(client.call('Get', { id: req.id, userId: '' })).rejects.toMatchObject({ code: 'VALIDATION_FAILED', details: [{ field: 'userId', problem: 'Invalid UUID' }] });
  });

  it("pages through the user's notifications newest first with the HTTP API's cursors", async () => {
    const userId = randomUUID();
    const sent: NotificationMessage[] = [];
    for (let i = 0; i < 5; i++) sent.push(await callSend(sendReq({ userId, template: `t${i}` })));
    const newestFirst = [...sent].sort((x, y) => (x.createdAt === y.createdAt ? (x.id < y.id ? 1 : -1) : x.createdAt < y.createdAt ? 1 : -1));
    const first = await client.call<object, ListByUserResponse>('ListByUser', { userId, limit: 3 });
    expect(first.items).toEqual(newestFirst.slice(0, 3));
    expect(first.nextCursor).not.toBe('');
    const second = await client.call<object, ListByUserResponse>('ListByUser', { userId, limit: 3, cursor: first.nextCursor });
    expect(second).toEqual({ items: newestFirst.slice(3), nextCursor: '' });
    const byDefault = await client.call<object, ListByUserResponse>('ListByUser', { userId });
    expect(byDefault.items).toHaveLength(5);
  });

  it('refuses a bad limit, a foreign cursor and a missing user with INVALID_ARGUMENT listing each', async () => {
    const err = await client.call('ListByUser', { userId: 'x', limit: 101, cursor: 'WyJ4Il0' }).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'VALIDATION_FAILED',
      grpcCode: grpc.status.INVALID_ARGUMENT,
      details: [
        { field: 'userId', problem: 'Invalid UUID' },
        { field: 'limit', problem: 'Too big: expected number to be <=100' },
        { field: 'cursor', problem: 'Not a cursor this API issued; pass nextCursor from the previous page.' },
      ],
    });
  });
});

describe('gRPC deadlines', () => {
  /** Holds an uncommitted insert of `id`, so a Send of the same id waits on it. */
  async function blockId(id: string, userId: string) {
    const trx = await db.knex.transaction();
    await trx('notifications').insert({ id, user_id: userId, channel: 'email', template: 'blocker', data: {}, status: 'queued' });
    return trx;
  }
  const waitingBackends = async () =>
    Number(
      (
        await db.knex.raw(`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = 'grpc-service' and wait_event_type = 'Lock'`)
      ).rows[0].n,
    );

  it("stops the server's work when the caller's deadline passes: nothing is written once the blocker goes away", async () => {
    const req = sendReq();
    const blocker = await blockId(req.id, req.userId);
    try {
      const started = Date.now();
      const err = await newClient({ deadlineMs: 300 })
        .call('Send', req)
        .catch((e: unknown) => e);
      expect(err).toMatchObject({ status: 504 });
      expect(Date.now() - started).toBeLessThan(1_000);
      await waitFor('the server to give up waiting on the lock', async () => (await waitingBackends()) === 0, 2_000);
    } finally {
      await blocker.rollback();
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(await count(db.knex, 'notifications', { id: req.id })).toBe(0);
    expect(await count(db.knex, 'outbox', { aggregate_id: req.id })).toBe(0);
  });

  it('bounds the work of a call without a deadline by maxWorkMs and answers DEADLINE_EXCEEDED', async () => {
    const req = sendReq();
    const blocker = await blockId(req.id, req.userId);
    try {
      const started = Date.now();
      const err = await newClient({ deadlineMs: 30_000 })
        .call('Send', req)
        .catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'DEADLINE_EXCEEDED', status: 504, grpcCode: grpc.status.DEADLINE_EXCEEDED });
      expect(Date.now() - started).toBeGreaterThanOrEqual(900);
      expect(Date.now() - started).toBeLessThan(3_000);
    } finally {
      await blocker.rollback();
    }
    expect(await count(db.knex, 'notifications', { id: req.id })).toBe(0);
    // The retry the error invites succeeds once the way is clear.
    expect(await callSend(req)).toMatchObject({ id: req.id, status: 'queued' });
  });
});
