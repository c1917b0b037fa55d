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

  it('refuses, naming the limit, an event AMQP could not carry', async () => {
    const event = { aggregateType: 'user', aggregateId: 'u3', aggregateVersion: 1, eventType: 'user.registered', payload: {}, origin: 'monolith' };
    const append = (e: Partial<Omit<typeof event, 'payload'>> & { headers?: Record<string, string>; payload?: Record<string, unknown> }) => db.knex.transaction((trx) => appendEvent(trx, { ...event, ...e }));
    await expect(append({ eventType: `user.${'x'.repeat(260)}` })).rejects.toThrow(/routing key \(event type\) is 265 bytes, AMQP allows 255/);
    await expect(append({ origin: 'ü'.repeat(130) })).rejects.toThrow(/app id \(origin\) is 260 bytes, AMQP allows 255/);
    await expect(append({ headers: { ['h'.repeat(256)]: 'v' } })).rejects.toThrow(/header name "h{40}\.\.\." is 256 bytes, AMQP allows 255/);
    await expect(append({ headers: { big: 'x'.repeat(70_000) } })).rejects.toThrow(/headers take up to \d+ bytes encoded, more than the 60000 allowed/);
    await expect(append({ headers: { CC: 'ops@example.com' } })).rejects.toThrow(/header "CC" must be an array of routing keys/);
    // The writer's own headers: an origin given here escaped the check above (the relay then
    // refused the row for ever) and the consumers' echo filter; a schemaVersion reached them as NaN.
    await expect(append({ headers: { origin: 'o'.repeat(300) } })).rejects.toThrow('Invalid headers.origin for user.registered of user u3: the writer sets origin (give it as `origin`); leave it out of headers.');
    await expect(append({ headers: { schemaVersion: 'two' } })).rejects.toThrow('Invalid headers.schemaVersion for user.registered of user u3: the writer sets schemaVersion; leave it out of headers.');
    // Multi-byte characters: the limit is in bytes.
    await expect(append({ payload: { text: 'é'.repeat(8.5 * 1024 * 1024) } })).rejects.toThrow(/the payload is 17825803 bytes of JSON, more than the 16773120 a message body leaves for it/);
    // A payload that fits, but not with the envelope's copy of 50 kB of other headers (nor as
    // Postgres prints it): the relay could never publish it, so the write is refused.
    await expect(append({ payload: { d: 'x'.repeat(16 * 1024 * 1024 - 4_096 - 20) }, headers: { note: 'y'.repeat(50_000) } })).rejects.toThrow(
      /cannot be published: the body is 16823\d{3} bytes, more than the 16777216 the relay publishes/,
    );
    const commas = Object.fromEntries(Array.from({ length: 1_200_000 }, (_, i) => [`k${i}`, 1]));
    await expect(append({ payload: commas })).rejects.toThrow(/cannot be published: the body is \d+ bytes, more than the 16777216 the relay publishes/);
    // 420 kB of text, printed back by Postgres as 18 MB: numbers in exponent form print in full.
    await expect(append({ payload: { n: Array.from({ length: 60_000 }, () => 1e300) } })).rejects.toThrow(/cannot be published: the body is 18\d{6} bytes/);
    expect(await db.knex('outbox').where({ aggregate_id: 'u3' }).count({ c: '*' })).toEqual([{ c: 0 }]);
  });

  it('rejects a second event for the same aggregate version', async () => {
    const event = { aggregateType: 'order', aggregateId: 'o1', aggregateVersion: 1, eventType: 'order.placed', payload: {}, origin: 'monolith' };
    await db.knex.transaction((trx) => appendEvent(trx, event));
    await expect(db.knex.transaction((trx) => appendEvent(trx, event))).rejects.toMatchObject({ code: '23505' });
  });
});
