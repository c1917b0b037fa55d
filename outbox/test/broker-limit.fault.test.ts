import { afterAll, describe, expect, it } from 'vitest';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { appendEvent, createRelay } from '../src/index.ts';
import { createDomainTables, drainQueue, execFileAsync, waitFor, writeEvent } from './helpers.ts';

// Lowers the shared broker's max_message_size: runs in the `faults` project, alone.
const db = await createTestDatabase('monolith');
const broker = await createTestBroker();
await createDomainTables(db.knex);

const rabbitEval = async (expr: string) => (await execFileAsync('rabbitmqctl', ['eval', expr], { timeout: 30_000 })).stdout.trim();
const original = await rabbitEval('application:get_env(rabbit, max_message_size).');
afterAll(async () => {
  const value = /^\{ok,(\d+)\}$/.exec(original)?.[1];
  await rabbitEval(value ? `application:set_env(rabbit, max_message_size, ${value}).` : 'application:unset_env(rabbit, max_message_size).');
});

describe('a broker that refuses a message by closing the channel', () => {
  it('refuses the row it closes the channel on, found by publishing the batch one row at a time, publishes the others, and retries it alone', async () => {
    // Under the relay's own limit (16 MiB), over this broker's: RabbitMQ closes the channel
    // (406 PRECONDITION_FAILED), which on its own looks like a lost connection.
    await rabbitEval('application:set_env(rabbit, max_message_size, 65536).');
    const conn = await broker.connect('tap');
    const ch = await conn.createChannel();
    const tap = `${broker.prefix}.tap`;
    await ch.assertExchange(broker.exchange, 'topic', { durable: true });
    await ch.assertQueue(tap, { durable: true });
    await ch.bindQueue(tap, broker.exchange, '#');
    await conn.close();
    const before = [await writeEvent(db.knex, 'limit-1'), await writeEvent(db.knex, 'limit-2'), await writeEvent(db.knex, 'limit-3')];
    const big = await db.knex.transaction((trx) =>
      appendEvent(trx, { aggregateType: 'item', aggregateId: 'limit-big', aggregateVersion: 1, eventType: 'item.created', payload: { blob: 'x'.repeat(100_000) }, origin: 'monolith' }),
    );
    const after = [await writeEvent(db.knex, 'limit-1'), await writeEvent(db.knex, 'limit-2'), await writeEvent(db.knex, 'limit-3')];
    const relay = createRelay({ connection: db.connection, amqpUrl: broker.url, exchange: broker.exchange, pollIntervalMs: 200, leaseRetryMs: 200 });
    let connects = 0;
    const refused: string[] = [];
    relay.events.on('relay:amqp:connected', () => connects++);
    relay.events.on('relay:publish:rejected', ({ kind }) => refused.push(kind));
    await relay.start();
    try {
      const row = await waitFor('the big row refused', async () => {
        const r = await db.knex('outbox').where({ id: big.id }).first();
        return r?.last_error ? r : null;
      });
      expect(row.last_error).toMatch(/refused by the broker: .*message size \d+ is larger than configured max size 65536/);
      expect(refused).toEqual(['refused']);
      await waitFor('the others published', async () => Number((await db.knex('outbox').whereNull('published_at').count({ c: '*' }))[0]!.c) === 1);
      // The batch, then the big row alone: two channels closed, no loop.
      expect(connects).toBe(3);
      // Rows the broker took before it closed the channel may come twice (at least once); none is missing.
      const got = await drainQueue(broker, tap);
      expect([...new Set(got.map((m) => m.id))].sort()).toEqual([...before, ...after].map((w) => w.id).sort());
      expect(got.length).toBeLessThanOrEqual(12);

      // Its retry comes round with twenty new rows committed together: it goes out alone, after
      // them, so the broker closes one channel over it and nothing else fails or goes out twice.
      const more = await db.knex.transaction(async (trx) => {
        const written = [];
        for (let i = 0; i < 20; i++) written.push(await writeEvent(trx, `limit-more-${i}`));
        await trx('outbox').where({ id: big.id }).update({ next_attempt_at: trx.fn.now() });
        return written;
      });
      await waitFor('the big row refused again', async () => (await db.knex('outbox').where({ id: big.id }).first()).attempts === 2);
      await waitFor('the new rows published', async () => Number((await db.knex('outbox').whereNull('published_at').count({ c: '*' }))[0]!.c) === 1);
      expect(refused).toEqual(['refused', 'refused']);
      // One channel closed over it: one more connection, and no other after it.
      await waitFor('the relay reconnected', () => connects >= 4);
      await new Promise((r) => setTimeout(r, 1_000));
      expect(connects).toBe(4);
      const again = await drainQueue(broker, tap);
      expect(again.map((m) => m.id).sort()).toEqual(more.map((w) => w.id).sort());
    } finally {
      await relay.stop();
    }
  });
});
