import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { amqpEnv, closeAmqp, connectAmqp, createRegistry, loadConfig, openAmqpConnections, pgEnv, type ChannelModel, type Channel } from '@strangler/platform';
import pino from 'pino';
import { appendEvent, createOutboxXidTrigger, createRelay, logRelayEvents, registerRelayMetrics, type Relay, type RelayOptions } from '../src/index.ts';
import { busyPollFor, rateAfterPoll, smoothRate } from '../src/relay/relay.ts';
import { relayEnv, relayOptionsFromEnv } from '../src/relay/config.ts';
import { claimSqlLiteral, createDomainTables, drainQueue, partitionableProxy, waitFor, writeEvent, writeStream } from './helpers.ts';

const db = await createTestDatabase('monolith');
const broker = await createTestBroker();
await createDomainTables(db.knex);

let admin: ChannelModel;
let ch: Channel;
const raw = `${broker.prefix}.raw`;
beforeAll(async () => {
  admin = await broker.connect('admin');
  ch = await admin.createChannel();
  await ch.assertExchange(broker.exchange, 'topic', { durable: true });
  await ch.assertQueue(raw, { durable: true });
  await ch.bindQueue(raw, broker.exchange, 'item.*');
});
afterAll(() => admin.close());

const relays: Relay[] = [];
function startRelay(options: Partial<RelayOptions> = {}): Relay {
  const relay = createRelay({ connection: db.connection, amqpUrl: broker.url, exchange: broker.exchange, pollIntervalMs: 200, leaseRetryMs: 200, ...options });
  relays.push(relay);
  void relay.start();
  return relay;
}
afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()));
  await db.knex('outbox').update({ published_at: db.knex.fn.now() }).whereNull('published_at');
  await ch.purgeQueue(raw);
});

/** A relay's warnings and errors as logged (logRelayEvents), parsed, in `lines`. */
function logWarnings<Line extends { msg: string }>(relay: Relay, options?: Parameters<typeof logRelayEvents>[2]): Line[] {
  const lines: Line[] = [];
  logRelayEvents(relay.events, pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) }), options);
  return lines;
}

/** Waits until at least `count` messages reached the test queue, and takes them. */
const messagesAtBroker = (what: string, count = 1, timeoutMs?: number) =>
  waitFor(what, async () => {
    const m = await drainQueue(broker, raw);
    return m.length >= count ? m : null;
  }, timeoutMs);

const unpublished = async () => Number((await db.knex('outbox').whereNull('published_at').count<{ c: number }[]>({ c: '*' }))[0]!.c);

describe('relay', () => {
  it('refuses a batch size or retention that would spin or never prune, before connecting', () => {
    const base = { connection: db.connection, amqpUrl: broker.url, exchange: broker.exchange };
    expect(() => createRelay({ ...base, batchSize: 0 })).toThrow('createRelay: batchSize (0) must be a whole number of rows from 1 to 10000.');
    expect(() => createRelay({ ...base, batchSize: 2.5 })).toThrow(/batchSize \(2.5\)/);
    expect(() => createRelay({ ...base, retentionMs: Number.NaN })).toThrow('createRelay: retentionMs (NaN) must be a number of ms from 0 (how long published rows are kept).');
    expect(() => createRelay({ ...base, retentionMs: Infinity })).toThrow(/retentionMs \(Infinity\)/);
  });

  it('publishes each committed event as a persistent message routed by its type, with the envelope headers', async () => {
    const written = [await writeEvent(db.knex, 'env-1'), await writeEvent(db.knex, 'env-1')];
    startRelay();
    const got = await messagesAtBroker('two messages');
    expect(got.map((m) => m.id)).toEqual(written.map((w) => w.id));
    expect(got[0]).toMatchObject({
      routingKey: 'item.created',
      headers: { 'x-aggregate-type': 'item', 'x-aggregate-id': 'env-1', 'x-aggregate-version': 1, 'x-origin': 'monolith' },
      body: { id: written[0]!.id, type: 'item.created', aggregateType: 'item', aggregateId: 'env-1', aggregateVersion: 1, origin: 'monolith', payload: { id: 'env-1', version: 1 } },
    });
    expect(got[1]).toMatchObject({ routingKey: 'item.updated', headers: { 'x-aggregate-version': 2 } });
    await waitFor('rows marked published', async () => (await unpublished()) === 0);
  });

  it('claims large events under a byte budget, so a backlog of them flows and the small events behind them follow', async () => {
    // 1 MiB of incompressible text each: two fill a claim's budget (CLAIM_MAX_STORED_BYTES).
    const big = Array.from({ length: 12 }, () => randomBytes(768 * 1024).toString('base64'));
    const ids: string[] = [];
    for (const [i, blob] of big.entries()) {
      ids.push(await db.knex.transaction(async (trx) => (await appendEvent(trx, { aggregateType: 'item', aggregateId: `big-${i}`, aggregateVersion: 1, eventType: 'item.created', payload: { blob }, origin: 'test' })).id));
    }
    for (let i = 0; i < 5; i++) ids.push((await writeEvent(db.knex, `small-${i}`)).id);
    const relay = startRelay();
    const batches: number[] = [];
    relay.events.on('relay:batch:published', ({ count }) => batches.push(count));
    const got: string[] = [];
    await waitFor('all 17 at the broker', async () => {
      got.push(...(await drainQueue(broker, raw)).map((m) => m.id));
      return got.length >= 17;
    }, 30_000);
    expect(got).toEqual(ids);
    // Batches in flight together may confirm in any order.
    expect(batches.sort()).toEqual([2, 2, 2, 2, 2, 2, 5]);
    await waitFor('rows marked published', async () => (await unpublished()) === 0);
  }, 60_000);

  it('when a transaction commits late with a lower seq than rows already relayed, its event is still published', async () => {
    // A long fallback poll: what wakes the relay for the late row is its commit's NOTIFY.
    startRelay({ pollIntervalMs: 60_000 });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let lateId = '';
    let lateSeq = 0;
    const late = db.knex.transaction(async (trx) => {
      ({ id: lateId, seq: lateSeq } = await appendEvent(trx, { aggregateType: 'item', aggregateId: 'late', aggregateVersion: 1, eventType: 'item.created', payload: {}, origin: 'monolith' }));
      await held;
    });
    try {
      await waitFor('the late row to be inserted', () => lateId);
      const after = [await writeEvent(db.knex, 'early-1'), await writeEvent(db.knex, 'early-2')];
      const first = await messagesAtBroker('the later rows relayed', 2);
      expect(first.map((m) => m.id)).toEqual(after.map((a) => a.id));
      // Relayed with higher seqs than the row still uncommitted (which no other session sees).
      const seqs = await db.knex('outbox').whereIn('id', after.map((a) => a.id)).pluck('seq');
      expect(seqs).toHaveLength(2);
      for (const seq of seqs) expect(seq).toBeGreaterThan(lateSeq);
    } finally {
      // Never left open: it would hold the outbox's locks against every later test.
      release();
    }
    await late;
    const second = await messagesAtBroker('the late row relayed', 1, 5_000);
    expect(second.map((m) => m.id)).toEqual([lateId]);
  });

  it('reports a claim floor held back by a transaction left open: a gauge, and one warning per wait', async () => {
    const relay = startRelay({ claimFloorHeldWarnMs: 300 });
    const registry = createRegistry();
    registerRelayMetrics(relay, registry);
    const warnings = logWarnings<{ msg: string; seconds: number }>(relay);
    const held = () => warnings.filter((l) => l.msg.startsWith('the claim floor has not risen'));
    const gauge = async () => Number(/^strangler_relay_claim_floor_held_seconds (\S+)$/m.exec(await registry.metrics())?.[1]);
    await waitFor('leadership', () => relay.isLeader);
    // A transaction with a transaction id that stays open.
    const open = await db.knex.transaction();
    try {
      await open.raw('select pg_current_xact_id()');
      // Rows to claim: the floor then takes a candidate, which the open transaction keeps from maturing.
      await writeEvent(db.knex, 'held-1');
      await writeEvent(db.knex, 'held-2');
      await waitFor('the warning', () => held().length > 0, 5_000);
      expect(held()[0]!.seconds).toBeGreaterThanOrEqual(0.3);
      expect(relay.claimFloorHeldSeconds()).toBeGreaterThanOrEqual(0.3);
      expect(await gauge()).toBeGreaterThanOrEqual(0.3);
      // Still held a while later: no second warning for the same wait.
      await writeEvent(db.knex, 'held-3');
      // Held, the floor slows claims; it never stops them.
      await waitFor('held-3 published', async () => (await unpublished()) === 0);
      await new Promise((r) => setTimeout(r, 500));
      expect(held()).toHaveLength(1);
      expect(relay.claimFloorHeldSeconds()).toBeGreaterThanOrEqual(0.8);
    } finally {
      await open.commit();
    }
    await writeEvent(db.knex, 'held-4');
    await waitFor('the floor to rise again', async () => (await gauge()) === 0, 10_000);
  });

  it('warns when the claim floor turns off while it leads (its trigger disabled), and still publishes', async () => {
    const relay = startRelay({ fullScanIntervalMs: 200 });
    const states: boolean[] = [];
    relay.events.on('relay:claim:floor', ({ enabled }) => states.push(enabled));
    const warnings = logWarnings(relay);
    // The tenure's first check, not only the lease: it comes a few statements later.
    await waitFor('the floor checked on taking the lease', () => states.length > 0);
    await db.knex.raw('alter table outbox disable trigger outbox_assign_xid');
    try {
      await waitFor('the floor turned off', () => states.at(-1) === false, 5_000);
      expect(states).toEqual([true, false]);
      expect(warnings.map((w) => w.msg)).toContainEqual(expect.stringMatching(/outbox_assign_xid trigger is missing or not enabled ALWAYS/));
      const w = await writeEvent(db.knex, 'floor-off-1');
      const got = await messagesAtBroker('the message');
      expect(got.map((m) => m.id)).toEqual([w.id]);
    } finally {
      await createOutboxXidTrigger(db.knex);
    }
  });

  it('keeps at most four batches awaiting their confirms, and goes on as they come', async () => {
    const proxy = await partitionableProxy(broker.url);
    try {
      const relay = startRelay({ amqpUrl: proxy.url, batchSize: 5, notify: false, pollIntervalMs: 50 });
      await waitFor('leadership', () => relay.isLeader);
      proxy.holdReplies(); // the broker's confirms (and anything else it says) wait
      await db.knex.raw(
        `insert into outbox (id, aggregate_type, aggregate_id, aggregate_version, event_type, payload)
         select gen_random_uuid(), 'item', 'cap-' || n, 1, 'item.created', '{}' from generate_series(1, 60) n`,
      );
      // Four batches of five reach the broker, and no more while their confirms wait.
      const sent = await messagesAtBroker('the first messages at the broker');
      await new Promise((r) => setTimeout(r, 500));
      sent.push(...(await drainQueue(broker, raw)));
      expect(sent).toHaveLength(20);
      expect(await unpublished()).toBe(60);
      proxy.releaseReplies();
      await waitFor('all 60 published', async () => (await unpublished()) === 0, 10_000);
      const rest = await messagesAtBroker('the other 40 messages', 40);
      expect(rest).toHaveLength(40);
    } finally {
      await proxy.close();
    }
  });

  it('with NOTIFY switched off, the poll still publishes everything and the trigger stays silent', async () => {
    startRelay({ notify: false, pollIntervalMs: 100 });
    await waitFor('the trigger switched off', async () => (await db.knex('outbox_relay').first('notify'))?.notify === false);
    const w = await writeEvent(db.knex, 'poll-1');
    const got = await messagesAtBroker('the message');
    expect(got.map((m) => m.id)).toEqual([w.id]);
  });

  it('switches NOTIFY off under a burst and back on when idle', async () => {
    const relay = startRelay({ pollIntervalMs: 60_000 });
    const modes: string[] = [];
    relay.events.on('relay:mode', ({ mode }) => modes.push(mode));
    await waitFor('leadership', () => relay.isLeader);
    const burst = Array.from({ length: 40 }, (_, w) => (async () => {
      for (let i = 0; i < 40; i++) await writeEvent(db.knex, `burst-${w}`);
    })());
    await Promise.all(burst);
    await waitFor('busy mode', () => modes.includes('busy'), 10_000);
    await waitFor('back to notify mode', () => modes.at(-1) === 'notify', 10_000);
    expect((await db.knex('outbox_relay').first('notify'))?.notify).toBe(true);
    await waitFor('all 1,600 published', async () => (await unpublished()) === 0, 10_000);
  });

  it('treats an unroutable event as a failure: the row stays unpublished with its error, and goes out once a queue is bound', async () => {
    const relay = startRelay();
    const rejected: string[] = [];
    relay.events.on('relay:publish:rejected', ({ reason }) => rejected.push(reason));
    const { id } = await db.knex.transaction((trx) =>
      appendEvent(trx, { aggregateType: 'gadget', aggregateId: 'g1', aggregateVersion: 1, eventType: 'gadget.made', payload: {}, origin: 'monolith' }),
    );
    const row = await waitFor('the row to be refused', async () => {
      const r = await db.knex('outbox').where({ id }).first();
      return r?.attempts > 0 ? r : null;
    });
    expect(row.published_at).toBeNull();
    expect(row.last_error).toMatch(/unroutable.*gadget\.made/);
    expect(rejected[0]).toMatch(/unroutable/);
    const q = `${broker.prefix}.gadgets`;
    await ch.assertQueue(q, { durable: true });
    await ch.bindQueue(q, broker.exchange, 'gadget.*');
    // The first retry comes 2 s after the refusal.
    await waitFor('the row published on retry', async () => (await db.knex('outbox').where({ id }).first())?.published_at, 6_000);
    expect((await drainQueue(broker, q)).map((m) => m.id)).toEqual([id]);
  });

  // Written past the writer, which refuses them (an old writer, a hand-written insert): amqplib's
  // publish() would throw on either.
  it.each([
    { what: 'an event type of 300 bytes, which cannot be a routing key', eventType: `item.${'x'.repeat(295)}`, headers: { origin: 'monolith' }, error: /routing key \(event type\) is 300 bytes, AMQP allows 255/ },
    { what: 'nested headers too big for amqplib', eventType: 'item.created', headers: { origin: 'monolith', meta: { blob: 'x'.repeat(70_000) } }, error: /the headers take up to \d+ bytes encoded, more than the 60000 allowed/ },
    // RabbitMQ would close the channel on it: the rows before it would go out again and again.
    { what: 'a CC header that is not an array', eventType: 'item.created', headers: { origin: 'monolith', CC: 'ops@example.com' }, error: /header "CC" must be an array of routing keys/ },
    // Over what a broker may take (it would close the channel: the same loop).
    { what: 'a payload of 17 MiB', eventType: 'item.created', headers: { origin: 'monolith' }, payload: { blob: 'x'.repeat(17 * 1024 * 1024) }, error: /the body is \d+ bytes, more than the 16777216 the relay publishes/ },
    // No message can be made of it: the relay would lose its lease over it, again and again.
    { what: "created_at 'infinity'", eventType: 'item.created', headers: { origin: 'monolith' }, createdAt: 'infinity', error: /cannot be made into a message: created_at \(Infinity\) is not a time a message can carry/ },
    // amqplib's publish() threw on it: the connection was reset and every batch in flight went out again.
    { what: 'an origin that is not a string', eventType: 'item.created', headers: { origin: 5 }, error: /cannot be made into a message: headers\.origin \(5\) must be a string/ },
    { what: 'headers that are not an object', eventType: 'item.created', headers: ['monolith'], error: /cannot be made into a message: headers \(\["monolith"\]\) must be a JSON object/ },
    { what: 'a schema version that is not a number', eventType: 'item.created', headers: { origin: 'monolith', schemaVersion: 'two' }, error: /cannot be made into a message: headers\.schemaVersion \("two"\) must be a whole number from 1/ },
  ])('refuses a row AMQP cannot carry on its own ($what): the rows around it are published once each', async ({ eventType, headers, error, createdAt, payload }) => {
    const before = [await writeEvent(db.knex, 'long-1'), await writeEvent(db.knex, 'long-2')];
    const [bad] = await db.knex('outbox')
      .insert({ id: randomUUID(), aggregate_type: 'item', aggregate_id: randomUUID(), aggregate_version: 1, event_type: eventType, payload: payload ?? {}, headers: JSON.stringify(headers), ...(createdAt ? { created_at: createdAt } : {}) })
      .returning('id');
    const after = [await writeEvent(db.knex, 'long-1'), await writeEvent(db.knex, 'long-2')];
    const relay = startRelay();
    const registry = createRegistry({}, { defaults: false });
    registerRelayMetrics(relay, registry);
    let failedBatches = 0;
    relay.events.on('relay:batch:failed', () => failedBatches++);
    const row = await waitFor('the row refused', async () => {
      const r = await db.knex('outbox').where({ id: bad.id }).first();
      return r?.attempts > 0 ? r : null;
    });
    expect(row.last_error).toMatch(error);
    expect(row.next_attempt_at).not.toBeNull();
    expect(await registry.metrics()).toMatch(/strangler_relay_rejected_total\{reason="unencodable"\} 1/);
    await waitFor('the others published', async () => (await unpublished()) === 1);
    const got = await drainQueue(broker, raw);
    expect(got.map((m) => m.id).sort()).toEqual([...before, ...after].map((w) => w.id).sort());
    expect(failedBatches).toBe(0);
  });

  it('backs off while its tenures keep failing, and publishes once the cause is gone', async () => {
    // Every claim fails (a column it reads is missing: a migration half applied), so every
    // tenure ends in an error at once. Retaking the lease every 200 ms would hammer the database.
    const written = await writeEvent(db.knex, 'backoff-1');
    await db.knex.raw('alter table outbox rename column payload to payload_moved');
    let restored = false;
    try {
      const relay = startRelay();
      let acquired = 0;
      let errors = 0;
      relay.events.on('relay:leader:acquired', () => acquired++);
      relay.events.on('relay:db:error', () => errors++);
      await new Promise((r) => setTimeout(r, 4_000));
      // Pauses of at least 400, 600, 1,000 and 1,800 ms: at most five tenures in 4 s (twenty
      // or more without the backoff).
      expect(errors).toBeGreaterThanOrEqual(2);
      expect(acquired).toBeLessThanOrEqual(5);
      await db.knex.raw('alter table outbox rename column payload_moved to payload');
      restored = true;
      // The longest pause so far is under 10 s.
      await waitFor('published once the column is back', async () => (await unpublished()) === 0, 15_000);
      expect((await drainQueue(broker, raw)).map((m) => m.id)).toEqual([written.id]);
    } finally {
      if (!restored) await db.knex.raw('alter table outbox rename column payload_moved to payload');
    }
  });

  it('backs off from a broker that accepts connections and then drops them, and publishes once it keeps them', async () => {
    const proxy = await partitionableProxy(broker.url);
    try {
      proxy.dropAfter(400); // long enough for the handshake, the channel and the exchange (~50 ms idle)
      const relay = startRelay({ amqpUrl: proxy.url });
      let connected = 0;
      relay.events.on('relay:amqp:connected', () => connected++);
      await new Promise((r) => setTimeout(r, 8_000));
      // Reconnecting at once after each drop makes ~17 connections in 8 s; backing off, ~6.
      expect(connected, 'connections that opened').toBeGreaterThanOrEqual(2);
      expect(proxy.accepted).toBeLessThanOrEqual(11);
      proxy.dropAfter(null);
      // A connection accepted before still closes 400 ms after it was: an event published on it
      // could lose its confirm and go out again on the next one (a duplicate the relay is allowed,
      // not the one this test counts on). Once those are gone, every connection holds.
      await new Promise((r) => setTimeout(r, 500));
      const written = await writeEvent(db.knex, 'flapping-broker');
      await waitFor('published once connections hold', async () => (await unpublished()) === 0, 15_000);
      expect((await drainQueue(broker, raw)).map((m) => m.id)).toEqual([written.id]);
    } finally {
      await proxy.close();
    }
  }, 30_000);

  it('a leader that lost the broker but not the database hands the lease to a relay that can publish', async () => {
    const proxy = await partitionableProxy(broker.url);
    try {
      const a = startRelay({ amqpUrl: proxy.url, instance: 'relay-a' });
      await waitFor('relay-a leads', () => a.isLeader);
      const b = startRelay({ instance: 'relay-b' });
      const first = await writeEvent(db.knex, 'handover-1');
      await waitFor('published through relay-a', async () => (await unpublished()) === 0);
      proxy.goDown(); // relay-a's host cannot reach the broker any more; relay-b's can
      const lostAt = Date.now();
      const second = await writeEvent(db.knex, 'handover-1');
      await waitFor('published by relay-b', async () => (await unpublished()) === 0, 25_000);
      // 15 s of waiting for the broker, then one lease retry (200 ms here).
      expect(Date.now() - lostAt).toBeLessThan(20_000);
      expect((await db.knex('outbox_relay').first('leader')).leader).toBe('relay-b');
      expect(b.isLeader).toBe(true);
      expect((await drainQueue(broker, raw)).map((m) => m.id)).toEqual([first.id, second.id]);
    } finally {
      await proxy.close();
    }
  }, 40_000);

  it('claims through indexes that hold only what may be due: refused rows waiting for a retry are not walked', async () => {
    // An event type nobody has bound a queue to yet gathers refused rows, retried every minute
    // for as long as that lasts: the claim, every few milliseconds, must not visit them.
    await db.knex.raw(
      `insert into outbox (id, aggregate_type, aggregate_id, aggregate_version, event_type, payload, attempts, last_error, next_attempt_at)
       select gen_random_uuid(), 'item', 'waiting-' || n, 1, 'item.unbound', '{}', 3, 'unroutable: NO_ROUTE', now() + interval '1 hour'
         from generate_series(1, 5000) n`,
    );
    const due = await writeEvent(db.knex, 'after-the-refused');
    const plan = await db.knex.transaction(async (trx) => {
      await trx.raw('set local enable_seqscan = off; set local enable_bitmapscan = off'); // as on the leader's session
      const { rows } = await trx.raw(`explain (analyze, format json) ${claimSqlLiteral()}`);
      return rows[0]['QUERY PLAN'][0].Plan as PlanNode;
    });
    // The scans that find rows (not the mark's, which looks up the confirmed seqs): the pending
    // rows' twice (the claim, and its lowest `seq` for the floor, relay/claim.ts), the retries'.
    const scans = flatten(plan).filter((n) => (n['Index Name'] === 'outbox_pending_idx' || n['Index Name'] === 'outbox_retry_idx') && !n['Index Cond']?.includes('ANY'));
    expect(scans.map((n) => n['Index Name']).sort()).toEqual(['outbox_pending_idx', 'outbox_pending_idx', 'outbox_retry_idx']);
    // What they read, kept or thrown away: the due row (once per pending scan), none of the 5,000 waiting ones.
    expect(scans.reduce((sum, n) => sum + (n['Rows Removed by Filter'] ?? 0) + (n['Actual Rows'] ?? 0), 0)).toBe(2);
    const relay = startRelay();
    const registry = createRegistry({}, { defaults: false });
    registerRelayMetrics(relay, registry);
    await waitFor('the due row published', async () => !!(await db.knex('outbox').where({ id: due.id }).first())?.published_at);
    expect(await unpublished()).toBe(5_000);
    // Lag with a cause to look at: the refused rows count on their own.
    expect(await registry.metrics()).toMatch(/strangler_relay_refused_rows 5000/);
    await db.knex('outbox').where({ event_type: 'item.unbound' }).delete();
  });

  it('logs refusals once per kind and event type as they happen, the rest as one summary line', async () => {
    // 300 rows of an event type no queue is bound to: a line for each, every minute, would flood the log.
    await db.knex.raw(
      `insert into outbox (id, aggregate_type, aggregate_id, aggregate_version, event_type, payload)
       select gen_random_uuid(), 'thing', 'thing-' || n, 1, 'thing.created', '{}' from generate_series(1, 300) n`,
    );
    const relay = startRelay();
    const lines = logWarnings<{ msg: string; count?: number; eventType?: string }>(relay, { refusalsSummaryMs: 300 });
    await waitFor('every row refused once', async () => Number((await db.knex('outbox').where({ event_type: 'thing.created' }).where('attempts', '>', 0).count({ c: '*' }))[0]!.c) === 300);
    await waitFor('the summary', () => lines.some((l) => l.msg.startsWith('broker refused events')), 5_000);
    const refusals = lines.filter((l) => l.msg.startsWith('broker refused'));
    expect(refusals.length).toBeLessThanOrEqual(3);
    expect(refusals[0]).toMatchObject({ msg: 'broker refused an event; will retry', eventType: 'thing.created' });
    expect(refusals.slice(1).reduce((n, l) => n + (l.count ?? 0), 0)).toBe(299);
    await db.knex('outbox').where({ event_type: 'thing.created' }).delete();
  });

  it('refuses a row amqplib fails to encode, and goes on over a new connection', async () => {
    // A header amqplib refuses to encode whatever its size (its `{'!': type}` escape with a type
    // it does not know), which the relay does not foresee: publish() throws after counting the
    // message for a confirm, so the channel's confirms can no longer be matched to rows.
    const before = [await writeEvent(db.knex, 'nested-1'), await writeEvent(db.knex, 'nested-2')];
    const [bad] = await db.knex('outbox')
      .insert({ id: randomUUID(), aggregate_type: 'item', aggregate_id: 'nested-x', aggregate_version: 1, event_type: 'item.created', payload: {}, headers: { origin: 'monolith', meta: { '!': 'no-such-type', value: 1 } } })
      .returning('id');
    const after = [await writeEvent(db.knex, 'nested-1'), await writeEvent(db.knex, 'nested-2')];
    const relay = startRelay();
    let connects = 0;
    relay.events.on('relay:amqp:connected', () => connects++);
    const row = await waitFor('the row refused', async () => {
      const r = await db.knex('outbox').where({ id: bad.id }).first();
      return r?.attempts > 0 ? r : null;
    });
    expect(row.last_error).toMatch(/cannot be sent over AMQP: Unknown type to encode: no-such-type/);
    await waitFor('the others published', async () => (await unpublished()) === 1);
    // Rows sent before the throw may go out twice (at least once), none is missing.
    const got = await drainQueue(broker, raw);
    expect([...new Set(got.map((m) => m.id))].sort()).toEqual([...before, ...after].map((w) => w.id).sort());
    expect(connects).toBe(2);
  });

  it('gives up a connection whose confirms stopped coming and goes on over a new one', async () => {
    const proxy = await partitionableProxy(broker.url);
    const openBefore = openAmqpConnections();
    try {
      const relay = startRelay({ amqpUrl: proxy.url, confirmTimeoutMs: 500 });
      let connects = 0;
      let failedBatches = 0;
      relay.events.on('relay:amqp:connected', () => connects++);
      relay.events.on('relay:batch:failed', () => failedBatches++);
      await writeEvent(db.knex, 'flow-0');
      await waitFor('published through the proxy', async () => (await unpublished()) === 0);
      proxy.partition('existing'); // this TCP flow goes dark; a new connection would get through
      // More than a batch: a relay that saw its publish fail at once would claim again at once.
      await writeStream(db.knex, { count: 700, aggregates: 70, prefix: 'flow' });
      await waitFor('everything published over a new connection', async () => (await unpublished()) === 0, 20_000);
      expect(connects).toBe(2);
      // The batches in flight when the flow went dark, not a loop of failures.
      expect(failedBatches).toBeLessThanOrEqual(4);
      await relay.stop();
      // The dark connection's socket was dropped, not left waiting for the broker's answer.
      await waitFor('no connection left open', () => openAmqpConnections() === openBefore, 5_000);
    } finally {
      await proxy.close();
    }
  });

  it('deletes published rows past retention and keeps unpublished ones', async () => {
    const relay = startRelay({ retentionMs: 0, retentionIntervalMs: 100 });
    const deleted: number[] = [];
    relay.events.on('relay:retention:deleted', ({ count }) => deleted.push(count));
    // No queue is bound to widget.*: this row stays unpublished (refused as unroutable).
    const { id: kept } = await db.knex.transaction((trx) =>
      appendEvent(trx, { aggregateType: 'widget', aggregateId: 'ret-w', aggregateVersion: 1, eventType: 'widget.kept', payload: {}, origin: 'monolith' }),
    );
    const { id: published } = await writeEvent(db.knex, 'ret-1');
    await waitFor('the published row deleted', async () => !(await db.knex('outbox').where({ id: published }).first()));
    await waitFor('the unroutable row refused', async () => (await db.knex('outbox').where({ id: kept }).first())?.attempts > 0);
    await new Promise((r) => setTimeout(r, 300)); // three more retention runs
    expect(await db.knex('outbox').pluck('id')).toEqual([kept]);
    expect(deleted.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  });

  it('stops within bounds when the broker stopped answering', async () => {
    const proxy = await partitionableProxy(broker.url);
    try {
      const relay = createRelay({ connection: db.connection, amqpUrl: proxy.url, exchange: broker.exchange, pollIntervalMs: 200, leaseRetryMs: 200 });
      await relay.start();
      await writeEvent(db.knex, 'partitioned-1');
      await waitFor('published through the proxy', async () => (await unpublished()) === 0);
      proxy.partition();
      await writeEvent(db.knex, 'partitioned-2'); // published into the void: its confirm never comes
      // Without bounds, stop() waits for the broker's close-ok forever.
      const stopped = await Promise.race([relay.stop().then(() => true), new Promise((r) => setTimeout(() => r(false), 25_000))]);
      expect(stopped, 'stop() returned').toBe(true);
      expect(await unpublished(), 'the unconfirmed event stays unpublished').toBe(1);
    } finally {
      await proxy.close();
    }
  });

  it('exposes published, batches, leader and lag as Prometheus metrics', async () => {
    const relay = startRelay();
    const registry = createRegistry({}, { defaults: false });
    registerRelayMetrics(relay, registry);
    await waitFor('leadership', () => relay.isLeader);
    await writeEvent(db.knex, 'metrics-1');
    await waitFor('published', async () => (await unpublished()) === 0);
    const text = await waitFor('published counter', async () => {
      const t = await registry.metrics();
      return /strangler_relay_published_total 1\b/.test(t) ? t : null;
    });
    expect(text).toMatch(/strangler_relay_batches_total [1-9]/);
    expect(text).toMatch(/strangler_relay_leader 1/);
    expect(text).toMatch(/strangler_relay_lag_seconds 0/);
  });
});

describe('relay metrics when the outbox cannot be read', () => {
  it('report lag and refused rows as unknown (NaN), not as a drained outbox', async () => {
    // A typo in --db, or Postgres unreachable: 0 would read as drained, and a lag alert never fire.
    // (prom-client writes NaN as "Nan", which Prometheus reads as NaN.)
    const relay = startRelay({ connection: { ...db.connection, database: `${db.name}_no_such_database` } });
    const registry = createRegistry({}, { defaults: false });
    registerRelayMetrics(relay, registry);
    let dbErrors = 0;
    relay.events.on('relay:db:error', () => dbErrors++);
    await waitFor('a database error', () => dbErrors > 0, 15_000);
    const text = await registry.metrics();
    expect(text).toMatch(/^strangler_relay_lag_seconds Nan$/m);
    expect(text).toMatch(/^strangler_relay_refused_rows Nan$/m);
  });
});

describe('closeAmqp', () => {
  it('drops the socket of a connection whose close already waits for a broker that stopped answering', async () => {
    const proxy = await partitionableProxy(broker.url);
    try {
      const openBefore = openAmqpConnections();
      const conn = await connectAmqp(proxy.url, `${broker.prefix}-close`);
      proxy.partition();
      void conn.close().catch(() => {}); // its close-ok never comes; a second close() fails at once
      await closeAmqp(conn, 500);
      await waitFor('the socket dropped', () => openAmqpConnections() === openBefore, 3_000);
    } finally {
      await proxy.close();
    }
  });
});

describe('busy poll interval', () => {
  const ramp = { fromPerSec: 600, toPerSec: 1_000, minMs: 5, maxMs: 100 };
  it('stays at the minimum up to the start of the ramp and grows linearly to the maximum at its end', () => {
    expect([0, 500, 800, 1_200, 1_600, 5_000].map((r) => busyPollFor(r, { ...ramp, fromPerSec: 800, toPerSec: 1_600 }))).toEqual([5, 5, 5, 53, 100, 100]);
    expect([500, 600, 800, 1_000, 3_000].map((r) => busyPollFor(r, ramp))).toEqual([5, 5, 53, 100, 100]);
    expect(busyPollFor(2_000, { ...ramp, maxMs: 5 })).toBe(5);
  });

  it('refuses a ramp that does not rise, naming the settings', () => {
    const connection = { host: '127.0.0.1', port: 5432, user: 'postgres', password: '', database: 'x' };
    expect(() => createRelay({ connection, amqpUrl: 'amqp://127.0.0.1', busyPollMs: 50, busyPollMaxMs: 20 })).toThrow(/busyPollMaxMs \(20\) must be at least busyPollMs \(50\)/);
    const slow = loadConfig({ ...pgEnv, ...amqpEnv, ...relayEnv }, { RELAY_BUSY_POLL_MS: '50', RELAY_BUSY_POLL_MAX_MS: '20' });
    expect(() => relayOptionsFromEnv(slow, 'x')).toThrow(/RELAY_BUSY_POLL_MAX_MS="20": must be at least RELAY_BUSY_POLL_MS \("50"\)/);
    // A minimum alone above the default maximum raises the maximum with it.
    expect(relayOptionsFromEnv(loadConfig({ ...pgEnv, ...amqpEnv, ...relayEnv }, { RELAY_BUSY_POLL_MS: '200' }), 'x')).toMatchObject({ busyPollMs: 200, busyPollMaxMs: undefined });
    expect(() => createRelay({ connection, amqpUrl: 'amqp://127.0.0.1', busyPollMs: 200 })).not.toThrow();
    expect(() => createRelay({ connection, amqpUrl: 'amqp://127.0.0.1', busyRampFromPerSec: 900, busyRampToPerSec: 900 })).toThrow(/busyRampToPerSec \(900\) must be above busyRampFromPerSec \(900\)/);
    const env = loadConfig({ ...pgEnv, ...amqpEnv, ...relayEnv }, { RELAY_BUSY_RAMP_FROM_PER_SEC: '2000', RELAY_BUSY_RAMP_TO_PER_SEC: '1000' });
    expect(() => relayOptionsFromEnv(env, 'x')).toThrow(/RELAY_BUSY_RAMP_TO_PER_SEC="1000": must be above RELAY_BUSY_RAMP_FROM_PER_SEC \("2000"\)/);
    expect(relayOptionsFromEnv(loadConfig({ ...pgEnv, ...amqpEnv, ...relayEnv }, {}), 'x')).toMatchObject({ busyRampFromPerSec: 600, busyRampToPerSec: 1_000 });
  });

  it('refuses intervals past the longest timer Node.js can set (which would fire at once, in a loop)', () => {
    const connection = { host: '127.0.0.1', port: 5432, user: 'postgres', password: '', database: 'x' };
    expect(() => createRelay({ connection, amqpUrl: 'amqp://127.0.0.1', retentionIntervalMs: 2_592_000_000 })).toThrow(/retentionIntervalMs \(2592000000\) must be above 0 and at most 2147483647 ms/);
    expect(() => createRelay({ connection, amqpUrl: 'amqp://127.0.0.1', leaseRetryMs: 0 })).toThrow(/leaseRetryMs \(0\) must be above 0/);
    expect(() => loadConfig({ ...pgEnv, ...amqpEnv, ...relayEnv }, { RELAY_RETENTION_INTERVAL_MS: '2592000000' })).toThrow(/RELAY_RETENTION_INTERVAL_MS="2592000000": at most 2147483647 ms \(24\.8 days\), the longest timer Node\.js can set/);
    expect(() => loadConfig({ ...pgEnv, ...amqpEnv, ...relayEnv }, { RELAY_RETENTION_HOURS: '100000000' })).toThrow(/RELAY_RETENTION_HOURS="100000000": at most 87600 hours/);
  });

  it('follows a rate that rises over about a second, and one that falls at once', () => {
    let r = 0;
    for (let i = 0; i < 12; i++) r = smoothRate(r, 500, 250);
    expect(r).toBeGreaterThan(450);
    expect(busyPollFor(r, ramp)).toBe(5);
    // A sustained 3,000/s reaches the top of the ramp within about 1.5 s...
    for (let i = 0; i < 6; i++) r = smoothRate(r, 3_000, 250);
    expect(busyPollFor(r, ramp)).toBe(100);
    // ...and a window back at 500/s brings the poll straight back.
    expect(busyPollFor(smoothRate(r, 500, 250), ramp)).toBe(5);
  });

  it('corrects a rate pushed up by a stall\'s backlog with the next long poll', () => {
    // Steady 500/s, then one window that claimed a backlog at 4,000/s: the poll stretches...
    let r = 0;
    for (let i = 0; i < 12; i++) r = smoothRate(r, 500, 250);
    r = smoothRate(r, 4_000, 250);
    const poll = busyPollFor(r, ramp);
    expect(poll).toBeGreaterThan(40);
    // ...for one poll only: it finds what 500/s brings in that time, under half the prediction.
    r = rateAfterPoll(r, Math.round((500 * poll) / 1_000), poll);
    expect(busyPollFor(r, ramp)).toBe(5);
  });

  it('drops to the rate one long poll found when that is under half of what was predicted', () => {
    // 2,000/s polled every 100 ms predicts 200 rows: 50 means the load fell to 500/s.
    expect(rateAfterPoll(2_000, 50, 100)).toBe(500);
    expect(busyPollFor(rateAfterPoll(2_000, 50, 100), ramp)).toBe(5);
    expect(rateAfterPoll(2_000, 150, 100)).toBe(2_000);
    // A 5 ms poll predicts 10 rows: too few to tell a drop from chance.
    expect(rateAfterPoll(2_000, 0, 5)).toBe(2_000);
  });
});

interface PlanNode {
  'Index Name'?: string;
  'Index Cond'?: string;
  'Actual Rows'?: number;
  'Rows Removed by Filter'?: number;
  Plans?: PlanNode[];
}
const flatten = (n: PlanNode): PlanNode[] => [n, ...(n.Plans ?? []).flatMap(flatten)];
