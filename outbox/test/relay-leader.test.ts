import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import type { Channel, ChannelModel, ConsumeMessage } from '@strangler/platform';
import { createDomainTables, spawnRelay, waitFor, writeStream } from './helpers.ts';

const db = await createTestDatabase('monolith');
const broker = await createTestBroker();
await createDomainTables(db.knex);

// Every publication the broker routes, counted per message id.
const deliveries = new Map<string, number>();
let conn: ChannelModel;
let ch: Channel;
beforeAll(async () => {
  conn = await broker.connect('tap');
  ch = await conn.createChannel();
  await ch.assertExchange(broker.exchange, 'topic', { durable: true });
  const q = `${broker.prefix}.tap`;
  await ch.assertQueue(q, { durable: true });
  await ch.bindQueue(q, broker.exchange, '#');
  await ch.consume(q, (m: ConsumeMessage | null) => {
    if (!m) return;
    deliveries.set(String(m.properties.messageId), (deliveries.get(String(m.properties.messageId)) ?? 0) + 1);
    ch.ack(m);
  });
});
afterAll(() => conn.close());

const leader = async () => (await db.knex('outbox_relay').first('leader'))?.leader as string | null;
const total = () => [...deliveries.values()].reduce((a, b) => a + b, 0);

describe('two relays on one database', () => {
  it('only the leader publishes, each event exactly once; when the leader is killed the other takes over within seconds', async () => {
    const relays = { a: spawnRelay(db, broker, { RELAY_INSTANCE: 'relay-a' }), b: spawnRelay(db, broker, { RELAY_INSTANCE: 'relay-b' }) };
    try {
      const first = await waitFor('a leader', leader, 15_000);
      await writeStream(db.knex, { count: 1_000, aggregates: 50, writers: 4 });
      await waitFor('1,000 deliveries', () => deliveries.size === 1_000, 20_000);
      await new Promise((r) => setTimeout(r, 500));
      expect(total()).toBe(1_000); // no double publication while both run
      expect(await leader()).toBe(first);

      const dying = first === 'relay-a' ? relays.a : relays.b;
      const survivor = first === 'relay-a' ? 'relay-b' : 'relay-a';
      const stream = writeStream(db.knex, { count: 1_000, aggregates: 50, writers: 2, pauseMs: 2, prefix: 'b' });
      await new Promise((r) => setTimeout(r, 300));
      const killedAt = Date.now();
      await dying.kill('SIGKILL');
      await waitFor('the other relay to lead', async () => (await leader()) === survivor, 10_000);
      const failoverMs = Date.now() - killedAt;
      await stream;
      await waitFor('all 2,000 delivered', () => deliveries.size === 2_000, 20_000);
      expect(failoverMs).toBeLessThan(5_000);
      // Only what the killed leader had published but not yet marked may come twice.
      expect(total() - 2_000).toBeLessThanOrEqual(500);
      console.info(`failover ${failoverMs} ms, ${total() - 2_000} redelivered`);
    } finally {
      await Promise.all([relays.a.kill('SIGTERM'), relays.b.kill('SIGTERM')]);
    }
  }, 90_000);
});
