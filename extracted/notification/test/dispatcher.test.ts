import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createLogger, createRegistry } from '@strangler/platform';
import { createTestDatabase } from '@strangler/platform/testing';
import { FakeNotificationProvider, NotificationDispatcher, NotificationService, UNDELIVERABLE_TEMPLATE, type DispatcherOptions } from '../src/index.ts';
import { ISO, count, outboxRows, waitFor } from './helpers.ts';

const db = await createTestDatabase('notification');
const notifications = new NotificationService(db.knex);
const provider = new FakeNotificationProvider(db.knex);
const newDispatcher = (options: DispatcherOptions = {}, pool = db.knex, p = provider) => new NotificationDispatcher(pool, p, createLogger('test'), createRegistry({}, { defaults: false }), options);
const dispatcher = newDispatcher({ retryBaseMs: 0, maxAttempts: 3 });

const queue = async (extra: Record<string, unknown> = {}) =>
  (await notifications.send({ id: randomUUID(), userId: randomUUID(), channel: 'push', template: 'welcome', data: { n: 1 }, ...extra })).notification;
const row = (id: string) => db.knex('notifications').where({ id }).first();

describe('the dispatcher', () => {
  it('delivers a queued notification once, marks it sent (version 2) and emits one notification.sent', async () => {
    const created = await queue();
    expect(await dispatcher.drain()).toMatchObject({ sent: 1 });
    expect(await row(created.id)).toMatchObject({ status: 'sent', version: 2, provider_message_id: `push_${created.id.replaceAll('-', '')}` });
    const events = await outboxRows(db.knex, { aggregate_id: created.id });
    expect(events.map((e) => [e.event_type, e.aggregate_version])).toEqual([
      ['notification.queued', 1],
      ['notification.sent', 2],
    ]);
    expect(events[1]!.payload).toEqual({
      ...created,
      status: 'sent',
      updatedAt: expect.stringMatching(ISO),
      sentAt: events[1]!.payload.updatedAt,
      providerMessageId: `push_${created.id.replaceAll('-', '')}`,
      version: 2,
      attempts: 1,
    });
    expect(await count(db.knex, 'notification_dispatch', { notification_id: created.id })).toBe(0);
    await dispatcher.drain();
    expect((await provider.calls([created.id])).map((c) => c.outcome)).toEqual(['delivered']);
  });

  it('addresses email to the user in the projection', async () => {
    const userId = randomUUID();
    await db.knex('users').insert({ id: userId, email: 'ada@example.com', name: 'Ada', version: 1, created_at: new Date(), updated_at: new Date() });
    const created = await queue({ userId, channel: 'email' });
    await dispatcher.drain();
    expect(await provider.calls([created.id])).toMatchObject([{ outcome: 'delivered', recipient: 'ada@example.com', channel: 'email' }]);
  });

  it('holds an email back until its user has been synchronised, then addresses it', async () => {
    const userId = randomUUID();
    const created = await queue({ userId, channel: 'email' });
    expect(await dispatcher.runOnce()).toMatchObject({ retried: 1, sent: 0 });
    expect(await provider.calls([created.id])).toEqual([]);
    // Waiting for the user uses no attempt.
    expect(await db.knex('notification_dispatch').where({ notification_id: created.id }).first()).toMatchObject({ attempts: 0, last_error: expect.stringMatching(/waiting for user .* to be synchronised/) });
    await db.knex('users').insert({ id: userId, email: 'grace@example.com', name: 'Grace', version: 1, created_at: new Date(), updated_at: new Date() });
    // It is looked at again after 100 ms.
    await waitFor('the email to go out', async () => (await dispatcher.drain()).sent === 1, 5_000);
    expect(await provider.calls([created.id])).toMatchObject([{ outcome: 'delivered', recipient: 'grace@example.com' }]);
    expect(await row(created.id)).toMatchObject({ status: 'sent' });
  });

  it('fails an email whose user never arrives once it waited userWaitMs, saying what to check', async () => {
    const created = await queue({ channel: 'email' });
    expect(await newDispatcher({ userWaitMs: 0 }).runOnce()).toMatchObject({ failed: 1, sent: 0 });
    expect(await provider.calls([created.id])).toEqual([]);
    expect(await row(created.id)).toMatchObject({ status: 'failed', failure_reason: expect.stringMatching(/did not reach this service's users projection .*relay.*user\.\*/) });
  });

  it('retries a rejected delivery and marks it failed after maxAttempts, with one event for the final state only', async () => {
    const created = await queue({ template: UNDELIVERABLE_TEMPLATE, channel: 'sms' });
    expect((await dispatcher.runOnce()).retried).toBeGreaterThanOrEqual(1);
    expect(await row(created.id)).toMatchObject({ status: 'queued', version: 1 });
    await dispatcher.drain();
    expect(await row(created.id)).toMatchObject({ status: 'failed', version: 2, sent_at: null, failure_reason: expect.stringMatching(/^Gave up after 3 attempts: sms gateway rejected/) });
    expect((await provider.calls([created.id])).map((c) => c.outcome)).toEqual(['rejected', 'rejected', 'rejected']);
    const events = await outboxRows(db.knex, { aggregate_id: created.id });
    expect(events.map((e) => [e.event_type, e.aggregate_version])).toEqual([
      ['notification.queued', 1],
      ['notification.failed', 2],
    ]);
    expect(events[1]!.payload).toMatchObject({ status: 'failed', attempts: 3, providerMessageId: null });
  });

  it('waits between retries: a retried delivery is not due again at once', async () => {
    const slow = newDispatcher({ retryBaseMs: 60_000 });
    const created = await queue({ template: UNDELIVERABLE_TEMPLATE });
    await slow.drain();
    await slow.drain();
    expect(await provider.calls([created.id])).toHaveLength(1);
    const dispatch = await db.knex('notification_dispatch').where({ notification_id: created.id }).first();
    expect(dispatch).toMatchObject({ attempts: 1, last_error: expect.stringMatching(/rejected/) });
    expect(dispatch.next_attempt_at.getTime()).toBeGreaterThan(Date.now() + 50_000);
  });

  it('never delivers a notification it is not the writer of record for (no dispatch row)', async () => {
    const id = randomUUID();
    await db.knex('notifications').insert({ id, user_id: randomUUID(), channel: 'email', template: 'from_monolith', data: {}, status: 'queued', version: 1 });
    await dispatcher.drain();
    expect(await provider.calls([id])).toEqual([]);
    expect(await row(id)).toMatchObject({ status: 'queued', version: 1 });
  });

  it('sends every notification exactly once when two dispatchers with their own pools and providers race', async () => {
    const ids = new Set<string>();
    await db.knex.transaction(async (trx) => {
      const rows = Array.from({ length: 150 }, (_, i) => ({ id: randomUUID(), user_id: randomUUID(), channel: 'sms', template: 'race', data: { i }, status: 'queued', created_at: new Date() }));
      await trx('notifications').insert(rows);
      await trx('notification_dispatch').insert(rows.map((r) => ({ notification_id: r.id })));
      rows.forEach((r) => ids.add(r.id));
    });
    const racers = ['a', 'b'].map((name) => {
      const pool = db.newPool(`dispatcher-${name}`);
      return newDispatcher({ batchSize: 7 }, pool, new FakeNotificationProvider(pool, { latencyMs: 2 }));
    });
    const stats = await Promise.all(racers.map((d) => d.drain()));
    expect(stats[0]!.sent + stats[1]!.sent).toBe(150);
    expect(stats.every((s) => s.sent > 0)).toBe(true);
    const calls = await provider.calls([...ids]);
    expect(calls).toHaveLength(150);
    expect(calls.every((c) => c.outcome === 'delivered')).toBe(true);
    expect(new Set(calls.map((c) => c.notification_id)).size).toBe(150);
    const states = await db.knex('notifications').whereIn('id', [...ids]).select('status', 'version');
    expect(states.every((s) => s.status === 'sent' && s.version === 2)).toBe(true);
    expect(await db.knex('outbox').whereIn('aggregate_id', [...ids]).where({ event_type: 'notification.sent' }).count({ n: '*' })).toEqual([{ n: 150 }]);
  });

  it('answers a repeated provider call after a lost commit with the first receipt and delivers nothing twice', async () => {
    const created = await queue({ channel: 'sms' });
    const message = { notificationId: created.id, userId: created.userId, channel: 'sms' as const, template: 'welcome', data: {}, recipient: null };
    const first = await provider.deliver(message, new AbortController().signal);
    // The dispatcher's transaction rolled back (crash before commit): the row is claimed again.
    await dispatcher.drain();
    expect(await row(created.id)).toMatchObject({ status: 'sent', provider_message_id: first.providerMessageId });
    expect((await provider.calls([created.id])).map((c) => c.outcome)).toEqual(['delivered', 'duplicate']);
  });

  it('runs in the background once started and stops after its batch in progress', async () => {
    const background = newDispatcher({ pollIntervalMs: 20 });
    const created = await queue();
    background.start();
    try {
      await waitFor('the notification to be sent', async () => (await row(created.id)).status === 'sent', 5_000);
    } finally {
      await background.stop();
    }
  });
});
