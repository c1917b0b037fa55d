import { describe, expect, it } from 'vitest';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { consume } from '../src/index.ts';
import { appliedCount, assertExactlyOnceInOrder, createDomainTables, replicaHandler, spawnRelay, waitFor, writeStream } from './helpers.ts';

const db = await createTestDatabase('monolith');
const broker = await createTestBroker();
await createDomainTables(db.knex);

const published = async () => Number((await db.knex('outbox').whereNotNull('published_at').count<{ c: number }[]>({ c: '*' }))[0]!.c);

describe('relay process killed mid-stream', () => {
  it('when the relay is SIGKILLed 5 times during 5,000 events over 100 aggregates, every event is applied exactly once, in version order', async () => {
    const consumer = await consume({
      queue: `${broker.prefix}.kill`,
      bindings: ['item.*'],
      handler: replicaHandler(),
      db: db.newPool('consumer'),
      amqpUrl: broker.url,
      exchange: broker.exchange,
      retry: { maxAttempts: 10, baseMs: 200, maxMs: 1_000 },
    });
    const relays: Array<ReturnType<typeof spawnRelay>> = [];
    let duplicates = 0;
    consumer.events.on('consumer:batch:committed', (e) => (duplicates += e.duplicates));
    try {
      // About 600 events/s for ~8 s, so the five kills land while events keep coming.
      const stream = writeStream(db.knex, { count: 5_000, aggregates: 100, writers: 4, pauseMs: 5 });
      for (let kill = 0; kill < 5; kill++) {
        const relay = spawnRelay(db, broker);
        relays.push(relay);
        const before = await published();
        await waitFor(`relay #${kill + 1} to publish`, async () => (await published()) > before, 15_000);
        await new Promise((r) => setTimeout(r, 50 + Math.random() * 300));
        await relay.kill('SIGKILL');
      }
      await stream;
      const last = spawnRelay(db, broker);
      relays.push(last);
      await waitFor('all 5,000 applied', async () => (await appliedCount(db.knex)) >= 5_000, 60_000);
      // Give stray redeliveries a moment to (not) have an effect.
      await new Promise((r) => setTimeout(r, 300));
      await assertExactlyOnceInOrder(db.knex, 5_000);
      expect(await db.knex('outbox').whereNull('published_at').count<{ c: number }[]>({ c: '*' })).toEqual([{ c: 0 }]);
      await last.kill('SIGTERM');
      expect(last.child.exitCode).toBe(0);
      console.info(`duplicates absorbed by the consumer: ${duplicates}`);
    } finally {
      await Promise.all(relays.map((r) => r.kill('SIGKILL')));
      await consumer.stop();
    }
  }, 120_000);
});
