import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { afterAll, describe, expect, it } from 'vitest';
import { appendEvent, createRelay, listParked, type Relay } from '@strangler/outbox';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { bindNotificationQueue, NotificationService, startNotificationConsumer, type NotificationConsumer } from '../src/index.ts';
import { count, waitFor } from './helpers.ts';

// The monolith's side: a database with its outbox, published by a real relay to this file's exchange.
const monolith = await createTestDatabase('monolith');
const service = await createTestDatabase('notification');
const late = await createTestDatabase('notification');
const broker = await createTestBroker();

function startRelay(connection: typeof monolith.connection): Relay {
  // fullScanIntervalMs: a test below sets a published row back to unpublished by hand.
  const relay = createRelay({ connection, amqpUrl: broker.url, exchange: broker.exchange, pollIntervalMs: 100, leaseRetryMs: 100, fullScanIntervalMs: 200 });
  void relay.start();
  afterAll(() => relay.stop());
  return relay;
}
startRelay(monolith.connection);
startRelay(service.connection);

const consumers: NotificationConsumer[] = [];
afterAll(() => Promise.all(consumers.map((c) => c.stop())));
async function startConsumer(db: Knex, queue = `${broker.prefix}.notification`) {
  const c = await startNotificationConsumer({ db, amqpUrl: broker.url, exchange: broker.exchange, queue, retry: { maxAttempts: 6, baseMs: 100, maxMs: 400 } });
  consumers.push(c);
  return c;
}
const consumer = await startConsumer(service.newPool('consumer'));
const outcomes = { applied: 0, duplicates: 0, ignored: 0, retrying: 0, parked: 0 };
consumer.consumer.events.on('consumer:message:retrying', () => outcomes.retrying++);
consumer.consumer.events.on('consumer:message:parked', () => outcomes.parked++);
consumer.consumer.events.on('consumer:batch:committed', (e) => {
  outcomes.applied += e.applied.length;
  outcomes.duplicates += e.duplicates;
  outcomes.ignored += e.ignored;
});

/** One monolith write's event, appended as the monolith's recordEvent does (origin monolith, full state). */
async function monolithEvent(aggregateType: 'user' | 'notification', eventType: string, state: { id: string; version: number } & Record<string, unknown>, origin = 'monolith') {
  return monolith.knex.transaction((trx) =>
    appendEvent(trx, { aggregateType, aggregateId: state.id, aggregateVersion: state.version, eventType, payload: state, origin }),
  );
}
const published = (outboxId: string) => waitFor(`outbox row ${outboxId} published`, async () => (await monolith.knex('outbox').where({ id: outboxId }).first())?.published_at);

const userState = (id: string, version: number, extra: Record<string, unknown> = {}) => ({
  id,
  email: `u${version}@example.com`,
  name: 'Ada',
  passwordHash: 'scrypt$not-for-this-service',
  createdAt: '2024-05-01T10:00:00.000Z',
  updatedAt: `2024-05-01T10:00:0${version}.000Z`,
  version,
  ...extra,
});
const notificationState = (id: string, userId: string, version: number, extra: Record<string, unknown> = {}) => ({
  id,
  userId,
  channel: 'email',
  template: 'order_placed',
  data: { orderId: 'o-1', totalCents: 2_500 },
  status: 'queued',
  failureReason: null,
  providerMessageId: null,
  createdAt: '2024-05-01T10:00:00.123Z',
  updatedAt: '2024-05-01T10:00:00.123Z',
  sentAt: null,
  version,
  ...extra,
});

describe('the consumer of monolith events', () => {
  it('keeps the users projection in step, in version order even when version 2 arrives first', async () => {
    const id = randomUUID();
    const retryingBefore = outcomes.retrying;
    await monolithEvent('user', 'user.updated', userState(id, 2, { name: 'Ada L.' }));
    await monolithEvent('user', 'user.registered', userState(id, 1));
    const user = await waitFor('user version 2', async () => {
      const row = await service.knex('users').where({ id }).first();
      return row?.version === 2 && row;
    });
    expect(user).toEqual({ id, email: 'u2@example.com', name: 'Ada L.', version: 2, created_at: new Date('2024-05-01T10:00:00.000Z'), updated_at: new Date('2024-05-01T10:00:02.000Z') });
    expect(outcomes.retrying - retryingBefore).toBeGreaterThanOrEqual(1); // version 2 went round the delay queue
    expect(await count(service.knex, 'outbox')).toBe(0);
  });

  it("applies a monolith notification's lifecycle without dispatching it or writing an event", async () => {
    const id = randomUUID();
    const userId = randomUUID();
    await monolithEvent('notification', 'notification.queued', notificationState(id, userId, 1));
    const sent = notificationState(id, userId, 2, { status: 'sent', providerMessageId: `email_${id.replaceAll('-', '')}`, updatedAt: '2024-05-01T10:00:01.000Z', sentAt: '2024-05-01T10:00:01.000Z', attempts: 1 });
    await monolithEvent('notification', 'notification.sent', sent);
    await waitFor('notification version 2', async () => (await service.knex('notifications').where({ id }).first())?.version === 2);
    expect(await new NotificationService(service.knex).get(userId, id)).toEqual({
      id,
      userId,
      channel: 'email',
      template: 'order_placed',
      data: { orderId: 'o-1', totalCents: 2_500 },
      status: 'sent',
      failureReason: null,
      createdAt: '2024-05-01T10:00:00.123Z',
      updatedAt: '2024-05-01T10:00:01.000Z',
      sentAt: '2024-05-01T10:00:01.000Z',
    });
    expect(await service.knex('notifications').where({ id }).first()).toMatchObject({ provider_message_id: sent.providerMessageId, version: 2 });
    expect(await count(service.knex, 'notification_dispatch', { notification_id: id })).toBe(0);
    expect(await count(service.knex, 'outbox')).toBe(0);
  });

  it('has no second effect from a redelivered event or from an older version under a new message id', async () => {
    const id = randomUUID();
    const v1 = await monolithEvent('user', 'user.registered', userState(id, 1));
    await waitFor('user applied', async () => (await service.knex('users').where({ id }).first())?.version === 1);
    const v2 = await monolithEvent('user', 'user.updated', userState(id, 2, { name: 'Second' }));
    await waitFor('user version 2', async () => (await service.knex('users').where({ id }).first())?.version === 2);
    const duplicatesBefore = outcomes.duplicates;

    // The relay publishes v1 again (same message id), e.g. after losing a confirm.
    await monolith.knex('outbox').where({ id: v1.id }).update({ published_at: null });
    await published(v1.id);
    // And version 1 again under a new message id (a replay, a second writer): stale by version.
    await monolith.knex('outbox').whereIn('id', [v1.id, v2.id]).delete();
    await monolithEvent('user', 'user.registered', userState(id, 1, { name: 'Stale' }));
    await waitFor('both duplicates acknowledged', () => outcomes.duplicates - duplicatesBefore >= 2);
    expect(await service.knex('users').where({ id }).first()).toMatchObject({ version: 2, name: 'Second' });
  });

  it('ignores its own events coming back on its queue (origin notification)', async () => {
    const ignoredBefore = outcomes.ignored;
    const own = (await new NotificationService(service.knex).send({ id: randomUUID(), userId: randomUUID(), channel: 'sms', template: 'welcome', data: {} })).notification;
    const ownEvent = await service.knex('outbox').where({ aggregate_id: own.id }).first();
    await waitFor('its own event recorded in the inbox', async () => (await service.knex('inbox').where({ message_id: ownEvent.id }).first()) !== undefined);
    expect(outcomes.ignored - ignoredBefore).toBeGreaterThanOrEqual(1);
    expect(await service.knex('notifications').where({ id: own.id }).first()).toMatchObject({ version: 1, status: 'queued' });
    expect(await count(service.knex, 'outbox', { aggregate_id: own.id })).toBe(1);
  });

  it('parks an event whose payload it cannot apply, and keeps applying the rest', async () => {
    const bad = await monolithEvent('user', 'user.registered', { id: randomUUID(), version: 1, name: 'No email' });
    const good = randomUUID();
    await monolithEvent('user', 'user.registered', userState(good, 1));
    await waitFor('the good event applied', async () => (await service.knex('users').where({ id: good }).first()) !== undefined);
    const { messages } = await waitFor('the bad event parked', async () => {
      const parked = await listParked({ amqpUrl: broker.url, queue: `${broker.prefix}.notification` });
      return parked.messages.some((m) => m.id === bad.id) && parked;
    });
    expect(messages.find((m) => m.id === bad.id)!.error).toMatch(/EVENT_PAYLOAD_INVALID: user\.registered .*email/);
  });

  it('reports itself connected for /readyz', () => {
    expect(consumer.connected()).toBe(true);
  });
});

describe('bindNotificationQueue', () => {
  it('binds the queue without consuming, so events published before the consumer starts are applied once it does', async () => {
    const queue = `${broker.prefix}.late`;
    expect(await bindNotificationQueue({ amqpUrl: broker.url, exchange: broker.exchange, queue })).toEqual({ queue: `${queue}.events`, bindings: ['user.*', 'notification.*'] });
    const id = randomUUID();
    await published((await monolithEvent('user', 'user.registered', userState(id, 1))).id);
    expect(await count(late.knex, 'users')).toBe(0);
    await startConsumer(late.newPool('late-consumer'), queue);
    await waitFor('the event waiting in the queue applied', async () => (await late.knex('users').where({ id }).first())?.version === 1);
  });
});
