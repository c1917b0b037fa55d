import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '@strangler/platform/testing';
import { appendEvent } from '../src/index.ts';

const db = await createTestDatabase('monolith');

describe('appendEvent', () => {
  it('writes the event only if the surrounding transaction commits', async () => {
    await db.knex.transaction((trx) =>
      appendEvent(trx, { aggregateType: 'user', aggregateId: 'u1', aggregateVersion: 1, eventType: 'user.registered', payload: { id: 'u1' }, origin: 'monolith' }),
    );
    await expect(
      db.knex.transaction(async (trx) => {
        await appendEvent(trx, { aggregateType: 'user', aggregateId: 'u1', aggregateVersion: 2, eventType: 'user.updated', payload: { id: 'u1' }, origin: 'monolith' });
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    const rows = await db.knex('outbox').select('event_type', 'aggregate_version', 'headers', 'published_at');
    expect(rows).toEqual([{ event_type: 'user.registered', aggregate_version: 1, headers: { origin: 'monolith', schemaVersion: '1' }, published_at: null }]);
  });

  it('refuses a pool instead of a transaction, and malformed event types', async () => {
    const event = { aggregateType: 'user', aggregateId: 'u2', aggregateVersion: 1, eventType: 'user.registered', payload: {}, origin: 'monolith' };
    await expect(appendEvent(db.knex as never, event)).rejects.toThrow(/needs the business transaction/);
    await expect(db.knex.transaction((trx) => appendEvent(trx, { ...event, eventType: 'UserRegistered' }))).rejects.toThrow(/Invalid eventType/);
    await expect(db.knex.transaction((trx) => appendEvent(trx, { ...event, aggregateVersion: 0 }))).rejects.toThrow(/versions start at 1/);
  });

  it('rejects a second event for the same aggregate version', async () => {
    const event = { aggregateType: 'order', aggregateId: 'o1', aggregateVersion: 1, eventType: 'order.placed', payload: {}, origin: 'monolith' };
    await db.knex.transaction((trx) => appendEvent(trx, event));
    await expect(db.knex.transaction((trx) => appendEvent(trx, event))).rejects.toMatchObject({ code: '23505' });
  });
});
