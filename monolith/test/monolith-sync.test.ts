import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { appendEvent, createRelay, type ReceivedEvent } from '@strangler/outbox';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { startMonolithSync } from '../src/sync/consumer.ts';
import { notificationPublisher, notificationStateAt, waitFor } from './sync-helpers.ts';

const db = await createTestDatabase('monolith');
// A second database with the outbox stands in for the notification service's own.
const service = await createTestDatabase('monolith');
const broker = await createTestBroker();
const consumer = await startMonolithSync({
  db: db.newPool('monolith-sync'),
  amqpUrl: broker.url,
  exchange: broker.exchange,
  queue: `${broker.prefix}.monolith-sync`,
  // Gaps come back after 100, 200, 400 ... ms, capped at 1 s; parked after 20 tries.
  retry: { baseMs: 100, maxMs: 1_000, maxAttempts: 20 },
});
afterAll(() => consumer.stop());

const seen = { applied: [] as ReceivedEvent[], duplicates: 0, ignored: 0, retrying: [] as string[] };
consumer.events.on('consumer:batch:committed', ({ applied, duplicates, ignored }) => {
  seen.applied.push(...applied);
  seen.duplicates += duplicates;
  seen.ignored += ignored;
});
consumer.events.on('consumer:message:retrying', ({ id }) => seen.retrying.push(id));

const { publish, userOf } = await notificationPublisher(broker);
const stateAt = notificationStateAt;

const row = (id: string) => db.knex('notifications').where({ id }).first();
const count = async (table: string) => Number((await db.knex(table).count<{ c: number }[]>({ c: '*' }))[0]!.c);

describe('monolith sync consumer (notification events from the service)', () => {
  it('applies a notification in version order with the full state, and writes no outbox event and no dispatch row', async () => {
    const n = randomUUID();
    await publish({ notificationId: n, version: 1 });
    await waitFor('v1 applied', async () => (await row(n))?.version === 1);
    expect(await row(n)).toMatchObject({ status: 'queued', provider_message_id: null, sent_at: null, data: { orderId: 'o-1', totalCents: 2500 } });
    await publish({ notificationId: n, version: 2 });
    await waitFor('v2 applied', async () => (await row(n))?.version === 2);
    const expected = stateAt(n, 2, userOf(n));
    expect(await row(n)).toEqual({
      id: n,
      user_id: expected.userId,
      channel: 'email',
      template: 'order_placed',
      data: expected.data,
      status: 'sent',
      failure_reason: null,
      provider_message_id: expected.providerMessageId,
      version: 2,
      created_at: new Date(expected.createdAt),
      updated_at: new Date(expected.updatedAt),
      sent_at: new Date(expected.sentAt!),
    });
    expect(await count('outbox')).toBe(0);
    expect(await count('notification_dispatch')).toBe(0);
  });

  it('acknowledges a redelivered message and an older or equal version without effect', async () => {
    const n = randomUUID();
    const v1 = await publish({ notificationId: n, version: 1 });
    await publish({ notificationId: n, version: 2 });
    await waitFor('v2 applied', async () => (await row(n))?.version === 2);
    const before = await row(n);
    const duplicatesBefore = seen.duplicates;
    await publish({ id: v1, notificationId: n, version: 1 });
    await publish({ notificationId: n, version: 1, state: { ...stateAt(n, 1, userOf(n)), template: 'stale_copy' } });
    await publish({ notificationId: n, version: 2, state: { ...stateAt(n, 2, userOf(n)), template: 'stale_copy' } });
    await waitFor('three duplicates acknowledged', () => seen.duplicates - duplicatesBefore >= 3);
    expect(await row(n)).toEqual(before);
    expect(seen.applied.filter((e) => e.aggregateId === n).map((e) => e.aggregateVersion)).toEqual([1, 2]);
  });

  it('holds back a version that arrives before its predecessor until the predecessor is applied', async () => {
    const n = randomUUID();
    await publish({ notificationId: n, version: 1 });
    await waitFor('v1 applied', async () => (await row(n))?.version === 1);
    const v3 = await publish({ notificationId: n, version: 3, type: 'notification.failed', state: { ...stateAt(n, 3, userOf(n)), status: 'failed', failureReason: 'bounced' } });
    await waitFor('v3 to be sent round the delay queue', () => seen.retrying.includes(v3));
    expect((await row(n))?.version).toBe(1);
    await publish({ notificationId: n, version: 2 });
    await waitFor('v3 applied after v2', async () => (await row(n))?.version === 3, 15_000);
    expect(await row(n)).toMatchObject({ status: 'failed', failure_reason: 'bounced' });
    expect(seen.applied.filter((e) => e.aggregateId === n).map((e) => e.aggregateVersion)).toEqual([1, 2, 3]);
  });

  it("ignores the monolith's own events (origin monolith)", async () => {
    const n = randomUUID();
    const ignoredBefore = seen.ignored;
    await publish({ notificationId: n, version: 1, origin: 'monolith' });
    await waitFor('the echo to be acknowledged', () => seen.ignored > ignoredBefore);
    expect(await row(n)).toBeUndefined();
  });

  it('applies what a real relay publishes from the service outbox', async () => {
    const n = randomUUID();
    const userId = randomUUID();
    for (const version of [1, 2]) {
      await service.knex.transaction((trx) =>
        appendEvent(trx, { aggregateType: 'notification', aggregateId: n, aggregateVersion: version, eventType: version === 1 ? 'notification.queued' : 'notification.sent', payload: stateAt(n, version, userId), origin: 'notification' }),
      );
    }
    const relay = createRelay({ connection: service.connection, amqpUrl: broker.url, exchange: broker.exchange, pollIntervalMs: 100, applicationName: 'test-relay' });
    await relay.start();
    try {
      await waitFor('v2 applied from the relay', async () => (await row(n))?.version === 2, 15_000);
      expect(await row(n)).toMatchObject({ user_id: userId, status: 'sent' });
      expect(await count('outbox')).toBe(0);
      expect(await count('notification_dispatch')).toBe(0);
    } finally {
      await relay.stop();
    }
  });
});
