import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { createDb, openAmqpConnections, type Channel, type ChannelModel } from '@strangler/platform';
import { consume, consumerQueues, listParked, pruneInbox, replayParked, type Consumer, type ConsumeOptions } from '../src/index.ts';
import { HEADERS, toMessage } from '../src/envelope.ts';
import { command as parkedCommand } from '../../scripts/src/commands/parked.ts';
import { main } from '../../scripts/src/cli.ts';
import { appliedCount, createDomainTables, execFileAsync, partitionableProxy, replicaHandler, tcpProxy, waitFor } from './helpers.ts';

const db = await createTestDatabase('monolith');
const broker = await createTestBroker();
await createDomainTables(db.knex);
const pool = db.newPool('consumer');

let conn: ChannelModel;
let ch: Channel;
beforeAll(async () => {
  conn = await broker.connect('publisher');
  ch = await conn.createChannel();
  await ch.assertExchange(broker.exchange, 'topic', { durable: true });
});
afterAll(() => conn.close());

/** Publishes an item event the way the relay would (same envelope), bypassing the outbox. */
function publish(aggregateId: string, version: number, { id = randomUUID() as string, origin = 'monolith', payload = {} as Record<string, unknown>, headers = {} as Record<string, unknown> } = {}): string {
  const msg = toMessage({
    id,
    seq: 0,
    aggregate_type: 'item',
    aggregate_id: aggregateId,
    aggregate_version: version,
    event_type: version === 1 ? 'item.created' : 'item.updated',
    payload: JSON.stringify({ id: aggregateId, ...payload }),
    headers: { origin },
    created_at: new Date(),
  });
  ch.publish(broker.exchange, msg.routingKey, msg.content, { ...msg.options, headers: { ...msg.options.headers, ...headers } });
  return id;
}

const consumers: Consumer[] = [];
let n = 0;
async function start(options: Partial<ConsumeOptions> = {}): Promise<Consumer> {
  const c = await consume({
    queue: `${broker.prefix}.c${n++}`,
    bindings: ['item.*'],
    handler: replicaHandler(),
    db: pool,
    amqpUrl: broker.url,
    exchange: broker.exchange,
    retry: { maxAttempts: 3, baseMs: 100, maxMs: 200 },
    ...options,
  });
  consumers.push(c);
  return c;
}
afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.stop()));
  await db.knex.raw('truncate replica, applied, inbox');
});

const applied = () => db.knex('applied').orderBy('n').select('aggregate_id', 'version', 'event_id');
const replicaVersion = async (id: string) => (await db.knex('replica').where({ id }).first())?.version ?? null;

describe('consume', () => {
  it('acks a redelivered message without a second effect (the inbox remembers it)', async () => {
    const c = await start();
    const committed = vi.fn();
    c.events.on('consumer:batch:committed', committed);
    const id = publish('dup', 1);
    publish('dup', 1, { id });
    await waitFor('both deliveries handled', () => committed.mock.calls.reduce((s, [e]) => s + e.applied.length + e.duplicates, 0) === 2);
    expect(await applied()).toEqual([{ aggregate_id: 'dup', version: 1, event_id: id }]);
    expect(await db.knex('inbox').where({ message_id: id }).first()).toMatchObject({ consumer: c.queue, event_type: 'item.created' });
  });

  it('applies only newer versions: an older or equal one is acked without effect', async () => {
    await start();
    publish('v', 1);
    publish('v', 2);
    await waitFor('v2 applied', async () => (await replicaVersion('v')) === 2);
    publish('v', 2);
    publish('v', 1);
    const marker = publish('other', 1);
    await waitFor('later message applied', async () => (await applied()).some((r) => r.event_id === marker));
    expect((await applied()).filter((r) => r.aggregate_id === 'v').map((r) => r.version)).toEqual([1, 2]);
  });

  it('retries a version gap through the delay queue and applies it once its predecessor arrived, never out of order', async () => {
    const c = await start();
    const retries: number[] = [];
    c.events.on('consumer:message:retrying', ({ attempts }) => retries.push(attempts));
    publish('gap', 2);
    await waitFor('the gap retried', () => retries.length > 0);
    expect(await replicaVersion('gap')).toBeNull();
    publish('gap', 1);
    await waitFor('both applied', async () => (await replicaVersion('gap')) === 2, 5_000);
    expect((await applied()).map((r) => r.version)).toEqual([1, 2]);
  });

  it('reads a version a handler returns as a string of digits (a numeric column) as its number, and parks on one that is not a version', async () => {
    const base = replicaHandler();
    const asText = async (trx: Parameters<NonNullable<typeof base.versionOf>>[0], event: Parameters<NonNullable<typeof base.versionOf>>[1]) => {
      const version = await base.versionOf!(trx, event);
      return (version === null ? null : String(version)) as unknown as number | null;
    };
    await start({ handler: { ...base, versionOf: asText } });
    publish('text', 1);
    publish('text', 2);
    publish('text', 3);
    await waitFor('v3 applied', async () => (await replicaVersion('text')) === 3, 5_000);
    expect((await applied()).map((r) => r.version)).toEqual([1, 2, 3]);
    await Promise.all(consumers.splice(0).map((c) => c.stop()));
    const c = await start({ handler: { ...base, versionOf: async () => 'v1' as unknown as number }, retry: { maxAttempts: 1 } });
    const parked: string[] = [];
    c.events.on('consumer:message:parked', ({ error }) => parked.push(error));
    publish('bad-version', 1);
    await waitFor('parked', () => parked.length === 1);
    expect(parked[0]).toMatch(/The handler's versionOf returned "v1": return the entity's version as a whole number, or null when it does not exist here/);
  });

  it('caps a batch by bytes as well as by count: large messages go a few to a transaction', async () => {
    // Its queues declared, then nothing consuming: the messages wait together, 12 of 1.5 MiB.
    const c = await start();
    await Promise.all(consumers.splice(0).map((x) => x.stop()));
    const sizes: number[] = [];
    for (let i = 0; i < 12; i++) publish(`large-${i}`, 1, { payload: { blob: 'x'.repeat(1.5 * 1024 * 1024) } });
    const again = await start({ queue: c.queue, prefetch: 20, batchSize: 200 });
    again.events.on('consumer:batch:committed', ({ applied }) => sizes.push(applied.length));
    await waitFor('all 12 applied', async () => (await applied()).length === 12, 20_000);
    // 4 MiB reached at the third message: at most 3 to a transaction.
    expect(Math.max(...sizes)).toBeLessThanOrEqual(3);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(12);
  });

  it('refuses options that would stop it consuming or park every message, before connecting', async () => {
    const cases: Array<[Partial<ConsumeOptions>, RegExp]> = [
      [{ concurrency: 0 }, /concurrency \(0\) must be a whole number from 1 to 1000/],
      [{ concurrency: Number.NaN }, /concurrency \(NaN\)/],
      [{ batchSize: 0 }, /batchSize \(0\) must be a whole number from 1 to 10000/],
      [{ prefetch: 1.5 }, /prefetch \(1.5\) must be a whole number from 1 to 65535/],
      [{ retry: { maxAttempts: Number.NaN } }, /retry.maxAttempts \(NaN\)/],
      [{ retry: { baseMs: 0 } }, /retry.baseMs \(0\)/],
      [{ retry: { baseMs: 5_000, maxMs: 1_000 } }, /retry.maxMs \(1000\) must be a whole number from 5000/],
      [{ handler: {} }, /the handler needs apply\(trx, event\) or applyAll\(trx, events\)/],
      [{ bindings: 'item.*' as unknown as string[] }, /bindings \("item.\*"\) must be a list of at least one routing-key pattern/],
      [{ bindings: ['item.*', ''] }, /binding "" must be a routing-key pattern of 1 to 255 bytes/],
      [{ retry: null as unknown as ConsumeOptions['retry'] }, /retry \(null\) must be an object/],
      // Three tries 1 s and 2 s apart: a message can come back 3 s after it took effect.
      [{ retry: { maxAttempts: 3 }, inboxRetentionMs: 2_999 }, /inboxRetentionMs \(2999\) must be at least the retry cycle, 3000 ms/],
    ];
    const before = openAmqpConnections();
    for (const [options, message] of cases) await expect(start(options)).rejects.toThrow(message);
    expect(openAmqpConnections()).toBe(before);
  });

  it('takes a retry option given as undefined as its default, like an absent one', async () => {
    const parked = vi.fn();
    const c = await start({ retry: { maxAttempts: undefined, baseMs: 100, maxMs: undefined }, handler: replicaHandler(() => { throw new Error('refused'); }) });
    c.events.on('consumer:message:parked', parked);
    publish('p', 1);
    // Eight tries (the default), 100 ms doubling: parked after the seventh delay.
    await waitFor('parked', () => parked.mock.calls.length === 1, 30_000);
    expect(parked.mock.calls[0]![0]).toMatchObject({ attempts: 8 });
  });

  it('treats an absent entity as version 0 unless told to accept the first version seen', async () => {
    await start({ acceptFirstSeen: true });
    publish('mid', 5);
    await waitFor('v5 applied', async () => (await replicaVersion('mid')) === 5);
    publish('mid', 7);
    publish('mid', 6);
    await waitFor('v7 applied after v6', async () => (await replicaVersion('mid')) === 7, 5_000);
    expect((await applied()).map((r) => r.version)).toEqual([5, 6, 7]);
  });

  it('ignores events of its own origin (no echo)', async () => {
    const c = await start({ ignoreOrigin: 'order' });
    const committed = vi.fn();
    c.events.on('consumer:batch:committed', committed);
    publish('echo', 1, { origin: 'order' });
    const marker = publish('echo2', 1);
    await waitFor('marker applied', async () => (await applied()).some((r) => r.event_id === marker));
    expect(await replicaVersion('echo')).toBeNull();
    expect(committed.mock.calls.reduce((s, [e]) => s + e.ignored, 0)).toBe(1);
  });

  it('parks a poison message after N tries while later messages keep flowing, lists it, and replays it', async () => {
    let poisoned = true;
    const c = await start({
      handler: replicaHandler((e) => {
        if (poisoned && e.aggregateId === 'poison') throw new Error('cannot apply poison');
      }),
    });
    const parked = vi.fn();
    c.events.on('consumer:message:parked', parked);
    const poisonId = publish('poison', 1);
    const later = Array.from({ length: 20 }, (_, i) => publish(`fine-${i}`, 1));
    await waitFor('later messages applied', async () => (await appliedCount(db.knex)) === 20);
    await waitFor('the poison parked', () => parked.mock.calls.length === 1, 5_000);
    expect(parked.mock.calls[0]![0]).toMatchObject({ id: poisonId, attempts: 3, error: expect.stringMatching(/cannot apply poison/) });
    expect((await applied()).map((r) => r.event_id).sort()).toEqual([...later].sort());

    const listed = await listParked({ amqpUrl: broker.url, queue: c.queue });
    expect(listed.total).toBe(1);
    expect(listed.messages[0]).toMatchObject({ id: poisonId, type: 'item.created', aggregateId: 'poison', attempts: 3, error: expect.stringMatching(/cannot apply poison/) });
    // Listing leaves it parked.
    expect((await listParked({ amqpUrl: broker.url, queue: c.queue })).total).toBe(1);

    poisoned = false;
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      process.env.AMQP_URL = broker.url;
      expect(await parkedCommand.run({ positionals: [c.queue], values: {} })).toBe(0);
      expect(log.mock.calls.flat().join('\n')).toMatch(new RegExp(`${poisonId}[\\s\\S]*cannot apply poison[\\s\\S]*1 parked`));
      expect(await parkedCommand.run({ positionals: [c.queue], values: { replay: true, id: poisonId } })).toBe(0);
    } finally {
      log.mockRestore();
    }
    await waitFor('the replayed message applied', async () => (await replicaVersion('poison')) === 1, 5_000);
    // The broker applies the ack asynchronously: the queue length follows shortly.
    await waitFor('the parking queue empty', async () => (await listParked({ amqpUrl: broker.url, queue: c.queue })).total === 0, 3_000);
  });

  it('with the batch forms (versionsOf, applyAll), applies a burst per aggregate in version order and skips duplicates and gaps', async () => {
    const batches: number[] = [];
    const c = await start({
      batchSize: 50,
      concurrency: 1,
      handler: {
        async versionsOf(trx, events) {
          const rows = await trx('replica').whereIn('id', [...new Set(events.map((e) => e.aggregateId))]).select('id', 'version');
          const v = new Map(rows.map((r) => [r.id, r.version]));
          return events.map((e) => v.get(e.aggregateId) ?? null);
        },
        async applyAll(trx, events) {
          batches.push(events.length);
          for (const e of events) {
            await trx.raw('insert into replica (id, version) values (?, ?) on conflict (id) do update set version = excluded.version', [e.aggregateId, e.aggregateVersion]);
            await trx('applied').insert({ event_id: e.id, aggregate_id: e.aggregateId, version: e.aggregateVersion });
          }
        },
      },
    });
    const ids: string[] = [];
    for (let v = 1; v <= 30; v++) ids.push(publish('burst', v));
    publish('burst', 3, { id: ids[2] }); // redelivery
    publish('burst', 2); // stale version, new id
    const gap = publish('burst', 40); // gap: retried, parked after 3 tries
    await waitFor('v30 applied', async () => (await replicaVersion('burst')) === 30, 5_000);
    const parked = await waitFor('the gap parked', async () => {
      const { messages } = await listParked({ amqpUrl: broker.url, queue: c.queue });
      return messages.length ? messages : null;
    }, 5_000);
    expect(parked).toMatchObject([{ id: gap, attempts: 3, error: expect.stringMatching(/version gap.*at version 30.*has 40/) }]);
    expect((await applied()).map((r) => r.version)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(Math.max(...batches)).toBeGreaterThan(1);
  });

  it('applies messages that arrive together in few transactions, each aggregate in version order', async () => {
    const c = await start({ concurrency: 4 });
    const txns: number[] = [];
    c.events.on('consumer:batch:committed', ({ applied }) => txns.push(applied.length));
    const n = 60;
    for (let v = 1; v <= n / 3; v++) for (const id of ['ta', 'tb', 'tc']) publish(id, v);
    await waitFor('all applied', async () => (await applied()).length === n, 10_000);
    const rows = await applied();
    for (const id of ['ta', 'tb', 'tc']) expect(rows.filter((r) => r.aggregate_id === id).map((r) => r.version)).toEqual(Array.from({ length: n / 3 }, (_, i) => i + 1));
    // One transaction per message would be 60; they arrive within a few ms of each other.
    expect(txns.length).toBeLessThan(n / 4);
  });

  it('loses nothing when its parking queue was deleted: the returned copy makes it reconnect and declare the queue again', async () => {
    const c = await start();
    const reconnects = vi.fn();
    c.events.on('consumer:connected', reconnects);
    await ch.deleteQueue(consumerQueues(c.queue).dead);
    ch.publish(broker.exchange, 'item.created', Buffer.from('not json'), { messageId: 'garbage-2', persistent: true });
    await waitFor('parked after the queue came back', async () => (await listParked({ amqpUrl: broker.url, queue: c.queue })).total === 1, 10_000);
    expect(reconnects).toHaveBeenCalled();
  });

  it('sends a copy the broker refuses again, holding only that message, instead of reconnecting at each refusal', async () => {
    const queue = `${broker.prefix}.refused`;
    // A policy limits the parking queue to no message at all, refusing more: the broker nacks each copy.
    const policy = `${broker.prefix}-refuse-copies`;
    await execFileAsync('rabbitmqctl', ['set_policy', '--apply-to', 'queues', '--priority', '10', policy, `^${queue.replace(/\./g, '\\.')}\\.dead$`, '{"max-length":0,"overflow":"reject-publish"}'], { timeout: 30_000 });
    const lost = vi.fn();
    const refused: string[] = [];
    try {
      // Held messages, malformed ones and one the handler refuses (parked at its first failure),
      // must not take the place of the one transaction allowed at once.
      const c = await start({
        queue,
        concurrency: 1,
        retry: { maxAttempts: 1 },
        handler: replicaHandler((e) => {
          if (e.aggregateId === 'poison') throw new Error('refused by the handler');
        }),
      });
      c.events.on('consumer:connection:lost', lost);
      c.events.on('consumer:error', ({ error }) => refused.push(String(error)));
      for (const id of ['to-park-1', 'to-park-2']) ch.publish(broker.exchange, 'item.created', Buffer.from('not json'), { messageId: id, persistent: true });
      publish('poison', 1);
      for (let i = 0; i < 10; i++) publish(`flowing-${i}`, 1);
      await waitFor('the copies refused three times', () => refused.filter((e) => /the broker refused the copy to queue .*\.dead/.test(e)).length >= 3, 20_000);
      await waitFor('the other messages applied meanwhile', async () => (await appliedCount(db.knex)) === 10, 10_000);
    } finally {
      await execFileAsync('rabbitmqctl', ['clear_policy', policy], { timeout: 30_000 });
    }
    // Once the queue takes them, the copies are parked.
    await waitFor('parked once the policy is gone', async () => (await listParked({ amqpUrl: broker.url, queue })).total === 3, 20_000);
    expect(await replicaVersion('poison')).toBeNull();
    expect(lost).not.toHaveBeenCalled();
  });

  it('when its queues cannot be declared, rejects and leaves nothing running behind', async () => {
    const queue = `${broker.prefix}.conflict`;
    const { events } = consumerQueues(queue);
    // Someone declared the queue with other settings: the consumer's declaration fails (406).
    const other = await conn.createChannel();
    await other.assertQueue(events, { durable: false });
    await other.close();
    await expect(start({ queue })).rejects.toThrow(/PRECONDITION_FAILED|inequivalent arg/);
    // Once the conflict is gone nothing may come back to life: no consumer without a handle to stop it.
    await ch.deleteQueue(events);
    await new Promise((r) => setTimeout(r, 1_500));
    const check = await conn.createChannel();
    check.on('error', () => {}); // the 404 below closes this channel, as expected
    await expect(check.checkQueue(events)).rejects.toThrow(/NOT_FOUND/);
  });

  it('backs off from a broker that accepts connections and then drops them, and consumes once it keeps them', async () => {
    const proxy = await partitionableProxy(broker.url);
    try {
      proxy.dropAfter(400); // long enough to open the channels, declare the queues and consume (~50-90 ms idle)
      const c = await start({ amqpUrl: proxy.url, connectInBackground: true });
      let connected = 0;
      c.events.on('consumer:connected', () => connected++);
      await new Promise((r) => setTimeout(r, 10_000));
      // A fresh backoff after each drop makes ~16 attempts in 10 s; one that grows, ~7. Each
      // attempt opens two connections (one consumes, one publishes retry copies).
      expect(connected, 'connections that opened').toBeGreaterThanOrEqual(2);
      expect(proxy.accepted).toBeLessThanOrEqual(2 * 11);
      proxy.dropAfter(null);
      publish('flapping-broker', 1);
      await waitFor('applied once connections hold', async () => (await replicaVersion('flapping-broker')) === 1, 15_000);
    } finally {
      await proxy.close();
    }
  }, 30_000);

  it('stops within bounds when the broker stopped answering', async () => {
    const proxy = await partitionableProxy(broker.url);
    try {
      const c = await start({ amqpUrl: proxy.url });
      publish('before', 1);
      await waitFor('applied through the proxy', async () => (await replicaVersion('before')) === 1);
      proxy.partition();
      // Without bounds, stop() waits for the broker's answers (cancel-ok, close-ok) forever.
      const stopped = await Promise.race([c.stop().then(() => true), new Promise((r) => setTimeout(() => r(false), 20_000))]);
      expect(stopped, 'stop() returned').toBe(true);
    } finally {
      await proxy.close();
    }
  });

  describe('a handler that waits on something that never answers (an HTTP call without a timeout)', () => {
    const never = new Promise<void>(() => {});
    const hangingOn = (aggregateId: string) => replicaHandler(async (event) => (event.aggregateId === aggregateId ? never : undefined));
    const poolInUse = () => (pool.client as { pool: { numUsed(): number } }).pool.numUsed();

    it('ends its transaction at transactionTimeoutMs, so the messages behind it keep flowing and it goes round the retries', async () => {
      const c = await start({ prefetch: 10, transactionTimeoutMs: 500, handler: hangingOn('stuck') });
      const retried = vi.fn();
      c.events.on('consumer:message:retrying', retried);
      publish('stuck', 1);
      await new Promise((r) => setTimeout(r, 100));
      for (let i = 0; i < 40; i++) publish(`behind-${i}`, 1);
      // Before: its batch held a connection, its aggregate and the front of the ack window for
      // good; prefetch (10) filled behind it and nothing more arrived.
      await waitFor('every message behind it applied', async () => (await appliedCount(db.knex)) === 40, 20_000);
      await waitFor('the hanging message sent round the retries', () => retried.mock.calls.length >= 1, 20_000);
      expect(retried.mock.calls[0]![0]).toMatchObject({ error: expect.stringContaining('transaction took longer than 500 ms') });
    }, 40_000);

    it('is abandoned by stop() after its grace: stop returns and the connection is back in the pool', async () => {
      const c = await start({ handler: hangingOn('stuck') }); // default timeout: 60 s
      const idle = poolInUse();
      publish('stuck', 1);
      await waitFor('the transaction running', () => poolInUse() === idle + 1);
      const t0 = Date.now();
      await c.stop();
      expect(Date.now() - t0, 'stop() took').toBeLessThan(8_000);
      // Before: still checked out, so the caller's db.destroy() waited for the handler for good.
      expect(poolInUse()).toBe(idle);
    }, 20_000);
  });

  it('refuses a versionsOf result that is not one entry per event, rather than reading versions by a shifted position', async () => {
    await db.knex('replica').insert({ id: 'B', version: 2 });
    const base = replicaHandler();
    const c = await start({
      retry: { maxAttempts: 2, baseMs: 100, maxMs: 100 },
      handler: {
        ...base,
        versionOf: undefined,
        // The natural mistake: the versions of the entities found, not one per event (A has none).
        async versionsOf(trx, events) {
          const rows = await trx('replica').whereIn('id', events.map((e) => e.aggregateId)).select('version');
          return rows.map((r: { version: number }) => r.version);
        },
      },
    });
    const parked = vi.fn();
    c.events.on('consumer:message:parked', parked);
    // Sent from one channel back to back, they reach the consumer together, as one batch.
    publish('A', 1);
    publish('B', 3);
    await waitFor('A parked', () => parked.mock.calls.length === 1, 20_000);
    // Before: A v1 was given B's version 2, judged stale, and acked without being applied. Now
    // the batch fails, and retried alone, A fails again (no version for it), until it is parked.
    expect(parked.mock.calls[0]![0]).toMatchObject({ error: expect.stringContaining("The handler's versionsOf returned 0 versions for 1 events: return one entry per event") });
    expect((await applied()).map((r) => `${r.aggregate_id}${r.version}`)).toEqual(['B3']);
  }, 30_000);

  describe('a handler error that looks like a lost connection while the database answers', () => {
    const refused = () => Object.assign(new Error('connect ECONNREFUSED 192.0.2.9:443'), { code: 'ECONNREFUSED' });
    const parkedWithin = async (c: Consumer, ms: number) => {
      let parked = 0;
      let inPlace = 0;
      c.events.on('consumer:message:parked', () => parked++);
      c.events.on('consumer:error', ({ component }) => void (component === 'db' && inPlace++));
      await waitFor('the message parked', () => parked === 1, ms);
      return inPlace;
    };

    it('is retried in place a few times, then like any failure: parked after its attempts', async () => {
      // A downstream call refused: the same error code as a database that is down.
      const c = await start({ retry: { maxAttempts: 2, baseMs: 100, maxMs: 100 }, handler: replicaHandler((e) => {
          if (e.aggregateId === 'webhook') throw refused();
        }),
      });
      publish('webhook', 1);
      // Two deliveries, each retried in place three times.
      expect(await parkedWithin(c, 15_000)).toBe(6);
    });

    it('a session killed for idling in its transaction is such an error too', async () => {
      const base = replicaHandler();
      const c = await start({
        retry: { maxAttempts: 2, baseMs: 100, maxMs: 100 },
        handler: {
          ...base,
          async apply(trx, event) {
            if (event.aggregateId === 'slow') {
              // A slow call made inside the transaction, past the session's limit.
              await trx.raw(`set local idle_in_transaction_session_timeout = '100ms'`);
              await new Promise((r) => setTimeout(r, 400));
            }
            await base.apply!(trx, event);
          },
        },
      });
      publish('slow', 1);
      expect(await parkedWithin(c, 15_000)).toBe(6);
    });

    it('does not hold up the other aggregates of its batch', async () => {
      await start({ prefetch: 5, handler: replicaHandler((e) => {
          if (e.aggregateId === 'webhook') throw refused();
        }),
      });
      publish('webhook', 1);
      for (let i = 0; i < 20; i++) publish(`fine-${i}`, 1);
      await waitFor('the 20 other messages applied', async () => (await appliedCount(db.knex)) === 20, 15_000);
    });
  });

  it('drops a transaction whose connection went silent past transactionTimeoutMs and applies the batch on another', async () => {
    const proxy = await tcpProxy(db.connection.host, db.connection.port);
    const viaProxy = createDb({ ...db.connection, host: '127.0.0.1', port: proxy.port }, { applicationName: 'consumer-partitioned', pool: { max: 4 } });
    let cut = false;
    try {
      const c = await start({
        db: viaProxy,
        transactionTimeoutMs: 1_000,
        handler: replicaHandler((e) => {
          // The connection this transaction runs on goes silent; new connections still work.
          if (e.aggregateId === 'mid' && !cut) {
            cut = true;
            proxy.partition('existing');
          }
        }),
      });
      const dropped = new Promise<unknown>((resolve) => c.events.once('consumer:error', ({ error }) => resolve(error)));
      publish('mid', 1);
      expect(String(await dropped)).toMatch(/transaction took longer than 1000 ms: its connection was dropped/);
      await waitFor('applied on another connection', async () => (await replicaVersion('mid')) === 1, 15_000);
      // The database ended its side too (idle in transaction past the same limit): no locks held.
      await waitFor('no session left in the transaction', async () => {
        const { rows } = await db.knex.raw(`select count(*)::int as n from pg_stat_activity where application_name = 'consumer-partitioned' and state like 'idle in transaction%'`);
        return rows[0].n === 0;
      }, 10_000);
    } finally {
      await Promise.all(consumers.splice(0).map((x) => x.stop()));
      await proxy.close();
      await viaProxy.destroy();
    }
  });

  it('does not leave a pooled connection held by its database probe when the database went silent', async () => {
    const proxy = await tcpProxy(db.connection.host, db.connection.port);
    const viaProxy = createDb({ ...db.connection, host: '127.0.0.1', port: proxy.port }, { applicationName: 'consumer-probed', pool: { max: 2 } });
    const pool = (viaProxy.client as { pool: { numUsed(): number } }).pool;
    try {
      const c = await start({ db: viaProxy, transactionTimeoutMs: 1_000 });
      const probed = new Promise<unknown>((resolve) => c.events.once('consumer:error', ({ error }) => resolve(error)));
      // Both connections of the pool open and idle, then silent: the batch's transaction takes one,
      // the probe that follows its timeout the other. New connections still work.
      await Promise.all([viaProxy.raw('select pg_sleep(0.05)'), viaProxy.raw('select pg_sleep(0.05)')]);
      proxy.partition('existing');
      publish('mid', 1);
      expect(String(await probed)).toMatch(/transaction took longer than 1000 ms/);
      await waitFor('applied on a new connection', async () => (await replicaVersion('mid')) === 1, 20_000);
      // The probe gave its connection up (dropped) rather than waiting on it for good.
      await waitFor('no pooled connection held', () => pool.numUsed() === 0, 10_000);
    } finally {
      await Promise.all(consumers.splice(0).map((x) => x.stop()));
      await proxy.close();
      await viaProxy.destroy();
    }
  });

  it('prunes its own inbox rows past inboxRetentionMs, keeping recent ones and other consumers\'', async () => {
    const c0 = `${broker.prefix}.c${n}`; // the name start() gives the next consumer
    const old = db.knex.raw("now() - interval '2 days'");
    await db.knex('inbox').insert([
      ...['a', 'b', 'c'].map((id) => ({ consumer: c0, message_id: `old-${id}`, event_type: 'item.created', processed_at: old })),
      { consumer: c0, message_id: 'recent', event_type: 'item.created' },
      { consumer: 'someone-else', message_id: 'old-x', event_type: 'item.created', processed_at: old },
    ]);
    const c = await start({ inboxRetentionMs: 24 * 3_600_000, inboxPruneIntervalMs: 200 });
    expect(c.queue).toBe(c0);
    const pruned = await new Promise<number>((resolve) => c.events.once('consumer:inbox:pruned', ({ count }) => resolve(count)));
    expect(pruned).toBe(3);
    const left = await db.knex('inbox').orderBy(['consumer', 'message_id']).select('consumer', 'message_id');
    expect(left.map((r) => `${r.consumer === c0 ? 'own' : r.consumer}/${r.message_id}`).sort()).toEqual(['own/recent', 'someone-else/old-x']);
    // In statements of at most `chunk` rows: a first prune of a large inbox is many short ones.
    await db.knex('inbox').insert(Array.from({ length: 5 }, (_, i) => ({ consumer: 'someone-else', message_id: `more-${i}`, event_type: 'item.created', processed_at: old })));
    expect(await pruneInbox(db.knex, 'someone-else', 24 * 3_600_000, { chunk: 2 })).toBe(6);
  });

  it('with connectInBackground, resolves while the broker is unreachable and stops cleanly', async () => {
    const proxy = await partitionableProxy(broker.url);
    proxy.goDown(); // the broker is down: every connection is dropped as soon as it is accepted
    try {
      const c = await start({ amqpUrl: proxy.url, connectInBackground: true });
      let errors = 0;
      c.events.on('consumer:error', () => errors++);
      await waitFor('connection attempts failing', () => errors >= 2, 10_000);
      expect(c.connected).toBe(false);
      const started = Date.now();
      await c.stop();
      expect(Date.now() - started).toBeLessThan(3_000);
    } finally {
      await proxy.close();
    }
  });

  it('with connectInBackground, consumes once connected', async () => {
    const c = await start({ connectInBackground: true });
    await waitFor('connected', () => c.connected, 10_000);
    publish('background', 1);
    await waitFor('applied', async () => (await replicaVersion('background')) === 1);
  });

  it('a second stop() resolves only once the consumer has stopped', async () => {
    const c = await start();
    let stopped = false;
    c.events.on('consumer:stopped', () => (stopped = true));
    const first = c.stop();
    await c.stop();
    expect(stopped, 'stopped when the second call resolved').toBe(true);
    await first;
  });

  it.each([0.5, -1, 'two'])('counts an x-attempts header of %j as no attempts: retried, not looped through reconnects', async (value) => {
    const c = await start();
    let lost = 0;
    c.events.on('consumer:connection:lost', () => lost++);
    const retried = new Promise<{ attempts: number }>((resolve) => c.events.once('consumer:message:retrying', resolve));
    publish('odd-attempts', 2, { headers: { [HEADERS.attempts]: value } }); // a version gap: retried later
    const event = await Promise.race([retried, new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
    expect(event?.attempts).toBe(1);
    expect(lost).toBe(0);
  });

  it('drops CC and BCC from its copies: a retried or parked copy goes to one queue', async () => {
    // RabbitMQ routes on CC (sender-selected distribution), on the default exchange too: a copy
    // that kept it would also land in whatever queue the original's sender named.
    const c = await start();
    const named = `${broker.prefix}.cc-named`;
    await ch.assertQueue(named, { durable: false, autoDelete: false });
    try {
      ch.publish(broker.exchange, 'item.created', Buffer.from('not json'), { messageId: 'with-cc', persistent: true, headers: { CC: [named] } });
      await waitFor('parked', async () => (await listParked({ amqpUrl: broker.url, queue: c.queue })).total === 1);
      // The original reached no queue through its CC (nothing is bound to that key on the topic
      // exchange); the parked copy, sent through the default exchange, would have reached it.
      expect((await ch.checkQueue(named)).messageCount).toBe(0);
    } finally {
      await ch.deleteQueue(named);
    }
  });

  // Just under what amqplib can encode (a 64 KiB table): the parked copy's headers would not fit.
  it.each([
    { what: 'foreign headers', headers: { 'x-big': 'b'.repeat(65_400), 'x-small': 's' }, dropped: 'x-big, x-small' },
    { what: 'nested foreign headers', headers: { 'x-nested': { blob: 'b'.repeat(65_300) }, 'x-small': 's' }, dropped: 'x-nested, x-small' },
    { what: 'envelope headers', headers: { [HEADERS.origin]: 'o'.repeat(65_400), 'x-small': 's' }, dropped: `${HEADERS.origin}, x-small` },
  ])('parks a message when its $what leave no room for ours, dropping them, and goes on', async ({ headers, dropped }) => {
    const c = await start();
    let lost = 0;
    c.events.on('consumer:connection:lost', () => lost++);
    ch.publish(broker.exchange, 'item.created', Buffer.from('not json'), { messageId: 'bulky', persistent: true, headers });
    publish('after-bulky', 1);
    await waitFor('the next message applied', async () => (await replicaVersion('after-bulky')) === 1);
    await waitFor('parked', async () => (await listParked({ amqpUrl: broker.url, queue: c.queue })).total === 1);
    const got = await waitFor('the parked copy', async () => (await ch.get(consumerQueues(c.queue).dead, { noAck: true })) || null);
    expect(got.properties.messageId).toBe('bulky');
    expect(got.properties.headers).toMatchObject({ 'x-dropped-headers': dropped, 'x-attempts': 1, 'x-parked-error': expect.stringMatching(/not JSON/) });
    for (const name of Object.keys(headers)) expect(got.properties.headers).not.toHaveProperty(name);
    expect(lost).toBe(0);
  });

  it('`strangler parked` for a consumer that has no queues says so and exits 1', async () => {
    const err = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      expect(await main(['parked', `${broker.prefix}.nosuch`])).toBe(1);
      expect(await main(['parked', `${broker.prefix}.nosuch`, '--replay'])).toBe(1);
      expect(err.mock.calls.flat().join('\n')).toMatch(new RegExp(`There is no queue "${broker.prefix}\\.nosuch\\.dead": give the name the consumer passes to consume\\(\\)`));
    } finally {
      err.mockRestore();
    }
  });

  it('parks a message that is not an event envelope at once', async () => {
    const c = await start();
    ch.publish(broker.exchange, 'item.created', Buffer.from('not json'), { messageId: 'garbage', persistent: true });
    await waitFor('parked', async () => (await listParked({ amqpUrl: broker.url, queue: c.queue })).total === 1);
    const { messages } = await listParked({ amqpUrl: broker.url, queue: c.queue });
    expect(messages[0]).toMatchObject({ id: 'garbage', attempts: 1, error: expect.stringMatching(/not JSON/) });
    const { replayed } = await replayParked({ amqpUrl: broker.url, queue: c.queue, id: 'nope' });
    expect(replayed).toEqual([]);
  });

  it('parks JSON that is not an object as malformed, and still lists and replays the parking queue', async () => {
    const c = await start();
    for (const body of ['null', '42']) ch.publish(broker.exchange, 'item.created', Buffer.from(body), { messageId: `json-${body}`, persistent: true });
    await waitFor('both parked', async () => (await listParked({ amqpUrl: broker.url, queue: c.queue })).total === 2);
    const { messages } = await listParked({ amqpUrl: broker.url, queue: c.queue });
    expect(messages.map((m) => [m.id, m.error, m.body])).toEqual([
      ['json-null', 'body is JSON but not an object: null', 'null'],
      ['json-42', 'body is JSON but not an object: 42', '42'],
    ]);
    const { replayed } = await replayParked({ amqpUrl: broker.url, queue: c.queue, id: 'json-42' });
    expect(replayed.map((m) => m.id)).toEqual(['json-42']);
  });
});
