import { afterAll, describe, expect, it } from 'vitest';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { connectAmqp } from '@strangler/platform';
import { randomUUID } from 'node:crypto';
import { consume, consumerQueues, type ConsumeOptions } from '../src/index.ts';
import { toMessage } from '../src/envelope.ts';
import { appliedCount, assertExactlyOnceInOrder, createDomainTables, execFileAsync, replicaHandler, spawnRelay, waitFor, writeStream } from './helpers.ts';

// Disturbs the shared broker: runs in the `faults` project, alone.
const db = await createTestDatabase('monolith');
const broker = await createTestBroker();
await createDomainTables(db.knex);

const rabbitmqctl = (...args: string[]) => execFileAsync('rabbitmqctl', args, { timeout: 60_000 });

/** Waits until the broker accepts AMQP connections again (bounded). */
async function brokerUp(timeoutMs = 60_000) {
  await rabbitmqctl('-q', 'await_startup').catch(() => {});
  await waitFor('the broker to accept connections', async () => {
    const conn = await connectAmqp(broker.url, `${broker.prefix}-probe`);
    await conn.close();
    return true;
  }, timeoutMs);
}
// Whatever happens in the test, leave the broker running for everyone else.
afterAll(async () => {
  await rabbitmqctl('start_app').catch(() => {});
  await brokerUp();
}, 90_000);

/**
 * A durable queue bound to every event: it keeps what the relay published across the outages, in
 * the order the broker received it, so the relay's own ordering can be checked (the consumer's
 * version rule would hide a relay that reorders).
 */
async function createTap() {
  const queue = `${broker.prefix}.tap`;
  const conn = await connectAmqp(broker.url, `${broker.prefix}-tap`);
  const ch = await conn.createChannel();
  await ch.assertExchange(broker.exchange, 'topic', { durable: true });
  await ch.assertQueue(queue, { durable: true });
  await ch.bindQueue(queue, broker.exchange, '#');
  await conn.close();
  return {
    /** Every message in the tap, in arrival order (bounded wait for the queue to drain). */
    async read(expectedAtLeast: number): Promise<Array<{ id: string; aggregateId: string; aggregateVersion: number }>> {
      const c = await connectAmqp(broker.url, `${broker.prefix}-tap-read`);
      try {
        const rch = await c.createChannel();
        const seen: Array<{ id: string; aggregateId: string; aggregateVersion: number }> = [];
        await rch.prefetch(1_000);
        await rch.consume(queue, (m) => {
          if (m) seen.push(JSON.parse(m.content.toString()));
        }, { noAck: true });
        await waitFor(`the tap to hold ${expectedAtLeast} messages`, () => seen.length >= expectedAtLeast, 30_000);
        let n = -1;
        while (n !== seen.length) {
          n = seen.length;
          await new Promise((r) => setTimeout(r, 300));
        }
        return seen;
      } finally {
        await c.close();
      }
    },
  };
}

/** Per aggregate, the first arrival of each version must come in version order. */
function assertPublishedInOrder(messages: Array<{ id: string; aggregateId: string; aggregateVersion: number }>) {
  const seen = new Set<string>();
  const highest = new Map<string, number>();
  for (const m of messages) {
    if (seen.has(m.id)) continue; // a redelivery after a lost confirm
    seen.add(m.id);
    const prev = highest.get(m.aggregateId) ?? 0;
    if (m.aggregateVersion !== prev + 1) throw new Error(`aggregate ${m.aggregateId}: version ${m.aggregateVersion} published before version ${prev + 1}`);
    highest.set(m.aggregateId, m.aggregateVersion);
  }
  return seen.size;
}

describe('broker failures mid-stream', () => {
  it('when the broker closes every connection and then restarts, every event is still applied exactly once, in order', async () => {
    const tap = await createTap();
    const relay = spawnRelay(db, broker);
    const consumer = await consume({
      queue: `${broker.prefix}.faults`,
      bindings: ['item.*'],
      handler: replicaHandler(),
      db: db.newPool('consumer'),
      amqpUrl: broker.url,
      exchange: broker.exchange,
      retry: { maxAttempts: 10, baseMs: 200, maxMs: 1_000 },
    });
    let reconnects = 0;
    consumer.events.on('consumer:connected', () => reconnects++);
    try {
      // ~500 events/s for ~10 s: the broker goes down while events are still being written.
      let streaming = true;
      const stream = writeStream(db.knex, { count: 5_000, aggregates: 80, writers: 4, pauseMs: 6 }).finally(() => (streaming = false));
      await waitFor('events flowing', async () => (await appliedCount(db.knex)) > 200, 20_000);
      const timeline: string[] = [`close_all_connections while streaming: ${streaming}`];
      await rabbitmqctl('close_all_connections', 'test');
      await waitFor('the consumer to reconnect', () => reconnects >= 1, 20_000);
      const before = await appliedCount(db.knex);
      await waitFor('events flowing again', async () => (await appliedCount(db.knex)) > before + 200, 20_000);
      try {
        timeline.push(`stop_app while streaming: ${streaming}`);
        await rabbitmqctl('stop_app');
        await new Promise((r) => setTimeout(r, 6_000));
      } finally {
        await rabbitmqctl('start_app');
        await brokerUp();
        timeline.push(`broker back while streaming: ${streaming}`);
      }
      console.info(timeline.join('; '));
      await stream;
      await waitFor('all 5,000 applied', async () => (await appliedCount(db.knex)) >= 5_000, 60_000);
      await new Promise((r) => setTimeout(r, 300));
      await assertExactlyOnceInOrder(db.knex, 5_000);
      // The relay itself kept each aggregate's order, and an outage is no refusal: no row was
      // held back as "nacked" (a refused row is marked once more than a published one).
      expect(assertPublishedInOrder(await tap.read(5_000))).toBe(5_000);
      const retried = await db.knex('outbox').where('attempts', '>', 1).count<{ c: number }[]>({ c: '*' });
      expect(Number(retried[0]!.c)).toBe(0);
      expect(reconnects).toBeGreaterThanOrEqual(2);
      expect(timeline.slice(0, 2).join()).not.toMatch(/false/);
      expect(relay.output.filter((l) => l.includes('connected to the broker')).length).toBeGreaterThanOrEqual(3);
    } finally {
      await relay.kill('SIGTERM');
      await consumer.stop();
    }
  });

  it('keeps a retried message whose delay ended while its events queue was gone, and delivers it once the queue is back', async () => {
    const queue = `${broker.prefix}.hop`;
    let failing = true;
    const options: ConsumeOptions = {
      queue,
      bindings: ['item.*'],
      handler: replicaHandler(() => {
        if (failing) throw new Error('not yet');
      }),
      db: db.newPool('hop'),
      amqpUrl: broker.url,
      exchange: broker.exchange,
      // Time enough to stop the consumer and delete its queue before the delay ends.
      retry: { maxAttempts: 3, baseMs: 5_000, maxMs: 5_000 },
    };
    const first = await consume(options);
    const retrying = new Promise((resolve) => first.events.once('consumer:message:retrying', resolve));
    const admin = await connectAmqp(broker.url, `${broker.prefix}-hop`);
    try {
      const ch = await admin.createConfirmChannel();
      const msg = toMessage({ id: randomUUID(), seq: 0, aggregate_type: 'item', aggregate_id: 'hop', aggregate_version: 1, event_type: 'item.created', payload: JSON.stringify({ id: 'hop' }), headers: {}, created_at: new Date() });
      ch.publish(broker.exchange, msg.routingKey, msg.content, msg.options);
      await ch.waitForConfirms();
      await retrying; // acked: from here on, only its copy in the 5 s delay queue exists
      await first.stop();
      // The events queue is gone when the copy's delay ends. A classic delay queue drops the
      // copy then (dead-lettering at most once); a quorum one keeps it.
      await ch.deleteQueue(consumerQueues(queue).events);
      await new Promise((r) => setTimeout(r, 2_000));
      await ch.assertQueue(consumerQueues(queue).events, { durable: true });
    } finally {
      await admin.close();
    }
    // RabbitMQ tries a kept dead-letter again every 3 minutes (dead_letter_worker_publisher_confirm_timeout),
    // and at once when the queue restarts: restart the broker app rather than wait.
    try {
      await rabbitmqctl('stop_app');
    } finally {
      await rabbitmqctl('start_app');
      await brokerUp();
    }
    failing = false;
    const second = await consume(options);
    try {
      await waitFor('the copy applied', async () => (await db.knex('replica').where({ id: 'hop' }).first())?.version === 1, 30_000);
    } finally {
      await second.stop();
    }
  });
});
