import { describe, expect, it } from 'vitest';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { consume, createRelay } from '../src/index.ts';
import { appliedCount, assertExactlyOnceInOrder, createDomainTables, replicaHandler, terminateBackends, waitFor, writeStream } from './helpers.ts';

const db = await createTestDatabase('monolith');
const broker = await createTestBroker();
await createDomainTables(db.knex);

describe('Postgres connections terminated mid-stream', () => {
  it("when pg_terminate_backend hits the relay's and the consumer's connections, nothing is lost or applied twice", async () => {
    const relay = createRelay({ connection: db.connection, amqpUrl: broker.url, exchange: broker.exchange, pollIntervalMs: 200, leaseRetryMs: 200, applicationName: 'relay-under-test' });
    const listens: number[] = [];
    const leaderships: number[] = [];
    relay.events.on('relay:listen:connected', () => listens.push(Date.now()));
    relay.events.on('relay:leader:acquired', () => leaderships.push(Date.now()));
    await relay.start();
    const consumer = await consume({
      queue: `${broker.prefix}.pgkill`,
      bindings: ['item.*'],
      handler: replicaHandler(),
      db: db.newPool('consumer-under-test'),
      amqpUrl: broker.url,
      exchange: broker.exchange,
      retry: { maxAttempts: 10, baseMs: 200, maxMs: 1_000 },
    });
    try {
      const stream = writeStream(db.knex, { count: 3_000, aggregates: 60, writers: 4, pauseMs: 3 });
      let terminated = 0;
      for (let round = 0; round < 4; round++) {
        await new Promise((r) => setTimeout(r, 600));
        terminated += await terminateBackends(db.name, 'relay-under-test%');
        terminated += await terminateBackends(db.name, 'consumer-under-test');
      }
      await stream;
      await waitFor('all 3,000 applied', async () => (await appliedCount(db.knex)) >= 3_000, 60_000);
      await new Promise((r) => setTimeout(r, 300));
      await assertExactlyOnceInOrder(db.knex, 3_000);
      expect(terminated).toBeGreaterThanOrEqual(8);
      expect(leaderships.length).toBeGreaterThanOrEqual(2); // the lease was lost and retaken
      expect(listens.length).toBeGreaterThanOrEqual(2); // the listener reconnected (and swept)
    } finally {
      await Promise.all([relay.stop(), consumer.stop()]);
    }
  }, 90_000);
});
