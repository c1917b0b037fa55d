import { EventEmitter } from 'node:events';
import {
  backoffDelay,
  closeAmqp,
  connectAmqp,
  EVENTS_EXCHANGE,
  isTransientDbError,
  MAX_TIMER_MS,
  ReconnectBackoff,
  sleep,
  settlesWithin,
  startSpan,
  tracingEnabled,
  type SpanHandle,
  type Channel,
  type ChannelModel,
  type ConfirmChannel,
  type ConsumeMessage,
  type Knex,
} from '@strangler/platform';
import { attemptsOf, fromMessage, HEADERS, type ReceivedEvent } from '../envelope.ts';
import { applyBatch, type EventHandler, type Outcome } from './apply-batch.ts';
import { consumerTransaction } from './pg-transaction.ts';
import { safeEmitConsumer, type ConsumerEventMap, type ConsumerEvents } from './events.ts';
import { pruneInbox } from './inbox.ts';
import { CopyRefusedError, sendCopy } from './retry.ts';
import { coalesceWrites } from '../amqp-writes.ts';
import { AckWindow } from './ack-window.ts';
import { consumerQueues, declareConsumerTopology, DEFAULT_RETRY, retryDelays, type RetryPolicy } from './topology.ts';

export interface ConsumeOptions {
  /**
   * The consumer's name and the base of its queues: `<queue>.events`, `<queue>.delay.<ms>ms`,
   * `<queue>.dead`; also its key in the inbox table. E.g. `notification` (tests: `${broker.prefix}.notification`).
   */
  queue: string;
  /** Routing-key patterns bound to `<queue>.events`, e.g. `['order.*']`. Bind every event type of an aggregate you sync, or the version rule sees gaps. */
  bindings: string[];
  handler: EventHandler;
  /** The consumer's own database (holds the inbox and the entities). Pool size should be at least `concurrency`. */
  db: Knex;
  amqpUrl: string;
  /** Default `strangler.events`. */
  exchange?: string;
  /** Unacknowledged messages the broker hands this consumer at once. Default 500. */
  prefetch?: number;
  /**
   * Most transactions running at once. Default 4. Events of one aggregate are never in two
   * running transactions, so they apply in arrival order. A second transaction only starts while
   * one runs when a full batch is waiting or the oldest waiting message has waited a few ms:
   * otherwise messages wait for the running one and go together in the next batch.
   */
  concurrency?: number;
  /**
   * Most messages applied in one transaction (each batch takes every message waiting, up to this,
   * and up to 4 MiB of message bodies, at least one message). Default 200.
   */
  batchSize?: number;
  /** Delay-queue retries before a message is parked in `<queue>.dead`. */
  retry?: RetryPolicy;
  /**
   * Apply the first version seen of an entity absent here, instead of requiring version 1.
   * Default false. For consumers that start mid-stream on full-state events (DESIGN.md): a first
   * event that fails and goes round the delay queues can be overtaken by the entity's next
   * event, which is then the first seen; when the earlier one comes back it is stale and acked
   * without effect (the state it carried is older than what was applied).
   */
  acceptFirstSeen?: boolean;
  /** Acknowledge without effect events whose origin is this (a service ignores its own echoes). */
  ignoreOrigin?: string;
  /**
   * Longest a batch's transaction may take, the handler's work included. Default 60,000 ms.
   * Past it the transaction's connection is dropped (a connection that went silent mid-way would
   * otherwise hold its batch for good) and the batch is retried; the database ends its side of
   * it as soon as it idles that long between statements (idle_in_transaction_session_timeout).
   */
  transactionTimeoutMs?: number;
  /**
   * How long inbox rows are kept: the consumer deletes its older rows every
   * `inboxPruneIntervalMs` (the first time a minute after it starts, or sooner if that is
   * shorter). Default 7 days: far beyond any redelivery, and the version rule guards events older
   * than that. At least the retry cycle (the sum of the retry delays; refused otherwise): a
   * message whose ack was lost after its transaction committed can come back that late. null:
   * never (prune with `pruneInbox` yourself).
   */
  inboxRetentionMs?: number | null;
  /** Default 3,600,000 ms (hourly). */
  inboxPruneIntervalMs?: number;
  /**
   * Resolve at once and make the first connection (and the queue declarations) in the
   * background, retried with the reconnect backoff, instead of rejecting when the broker is down:
   * for a service whose other work (HTTP, gRPC) must not wait for the broker. `connected` and
   * `consumer:connected` say when it consumes. Default false.
   */
  connectInBackground?: boolean;
}

export interface Consumer {
  readonly queue: string;
  readonly events: ConsumerEvents;
  /** True while it consumes `<queue>.events` (a channel open and the queues declared). */
  readonly connected: boolean;
  /**
   * Stops taking messages, lets running transactions finish (at most ~5 s, then abandons them:
   * rolled back, their connections back in the pool, their messages redelivered) and closes the
   * connections: within ~14 s in all, even if the broker stopped answering.
   */
  stop(): Promise<void>;
}

interface Generation {
  /** Consumes and acks; never publishes, so a broker alarm that blocks publishers does not stop its acks. */
  conn: ChannelModel;
  ch: Channel;
  /** Publishes the retry and parking copies, on a connection of its own (see conn). */
  pubConn: ChannelModel;
  pub: ConfirmChannel;
  acks: AckWindow;
  alive: boolean;
  /** Until open() returns it: a loss then fails open() (whose caller retries) instead of starting a reconnect loop. */
  opening: boolean;
  lostWhileOpening?: unknown;
  tag?: string;
}

interface Delivery {
  gen: Generation;
  msg: ConsumeMessage;
  event: ReceivedEvent;
  /** The aggregate: at most one transaction at a time holds it, so its events apply in arrival order. */
  key: string;
  /** When it arrived (performance.now()). */
  at: number;
}

// Serialization failures and deadlocks are retried in place up to 5 times, then count as a
// failed delivery. Lost connections and restarts are retried for as long as the database does not
// answer a probe; while it does, an error that looks like one (a handler's own call refused, a
// session killed for idling in its transaction) is retried in place up to 3 times, then counts
// as a failed delivery too: it is this batch's, not the database's, and retried in place for
// ever it would hold its batch and everything acked behind it.
const CONTENTION_CODES = new Set(['40001', '40P01']);
/**
 * Message bytes after which a batch takes no further message (it ends with the one that reaches
 * this, or with its first): `batchSize` counts messages, and 200 events of the 16 MiB the relay
 * publishes would be gigabytes in one transaction.
 */
const BATCH_MAX_BYTES = 4 * 1024 * 1024;
const MAX_CONTENTION_RETRIES = 5;
const MAX_TRANSIENT_RETRIES_WHILE_DB_ANSWERS = 3;
const DB_PROBE_TIMEOUT_MS = 5_000;
/**
 * Longest wait for the broker to confirm a retry or parking copy. Past it the copy counts as
 * failed (the original is not acked, and the connections are dropped so that the broker
 * redelivers it): a copy connection blocked by a broker alarm would otherwise hold the message,
 * and its aggregate, until the alarm ends.
 */
const COPY_CONFIRM_TIMEOUT_MS = 30_000;
/**
 * How long a copy the broker keeps refusing is sent again before the connection is dropped
 * (retryOrPark): meanwhile the message holds its aggregate, and the unacknowledged messages
 * behind it count against the prefetch; a refusal that lasts (a length limit on a queue nobody
 * drains) then costs a redelivery of the prefetch window a minute, not one per refusal.
 */
const COPY_REFUSED_GIVE_UP_MS = 60_000;
/** How long stop() lets running transactions finish before it abandons them. */
const STOP_GRACE_MS = 5_000;
// While one transaction runs, pending messages wait for it (and then go in one batch) unless
// they are a full batch or the oldest has waited this long: a second transaction then starts.
// Each transaction costs several round trips whatever its size, and on a loaded 2-core machine
// those, not the rows, are most of the consumer's cost (bench/outbox.ts).
const PARALLEL_AFTER_MS = 3;

/**
 * Consumes `<queue>.events`: each message takes effect at most once and events of an aggregate
 * apply in version order.
 *
 * Invariants: a message is acked only after the transaction that applied it (and wrote its id to
 * the inbox) committed, or after a copy of it was confirmed in a delay or parking queue; a
 * redelivered message finds its inbox row and has no second effect; an event whose version is
 * not the next one is never applied (gaps go round the delay queues until the predecessor lands
 * or the attempts run out).
 *
 * Failure modes: a lost broker connection drops the messages not yet started (the broker
 * redelivers them) and reconnects with backoff (up to 250 ms, 500 ms ... capped at 5 s); a lost
 * database connection retries the same batch in place with the same backoff, holding its aggregates,
 * as long as the database does not answer (see MAX_TRANSIENT_RETRIES_WHILE_DB_ANSWERS);
 * a handler error rolls the batch back and replays it one message per transaction, so only the
 * failing message goes to the delay queues, then to `<queue>.dead` after `maxAttempts`.
 * Resolves once consuming; rejects if the first connection or topology declaration fails (unless
 * `connectInBackground`).
 */
export async function consume(options: ConsumeOptions): Promise<Consumer> {
  const {
    queue: name,
    bindings,
    handler,
    db,
    amqpUrl,
    exchange = EVENTS_EXCHANGE,
    prefetch = 500,
    concurrency = 4,
    batchSize = 200,
    retry = {},
    acceptFirstSeen = false,
    ignoreOrigin,
    transactionTimeoutMs = 60_000,
    inboxRetentionMs = 7 * 24 * 3_600_000,
    inboxPruneIntervalMs = 3_600_000,
    connectInBackground = false,
  } = options;
  if (!name) throw new Error('consume: `queue` (the consumer name) is required.');
  // A string would be bound character by character, a pattern over 255 bytes refused by the broker
  // on every connect.
  if (!Array.isArray(bindings) || !bindings.length) throw new Error(`consume(${name}): bindings (${JSON.stringify(bindings)}) must be a list of at least one routing-key pattern, e.g. ["order.*"].`);
  for (const key of bindings) {
    if (typeof key !== 'string' || !key || Buffer.byteLength(key) > 255) throw new Error(`consume(${name}): binding ${JSON.stringify(key)} must be a routing-key pattern of 1 to 255 bytes, e.g. "order.*".`);
  }
  if (typeof handler?.apply !== 'function' && typeof handler?.applyAll !== 'function') throw new Error(`consume(${name}): the handler needs apply(trx, event) or applyAll(trx, events).`);
  const whole = (key: string, value: unknown, min: number, max: number, what: string) => {
    if (!(Number.isInteger(value) && (value as number) >= min && (value as number) <= max)) throw new Error(`consume(${name}): ${key} (${String(value)}) must be a whole number from ${min} to ${max} (${what}).`);
  };
  whole('prefetch', prefetch, 1, 65_535, 'unacknowledged messages at once');
  whole('concurrency', concurrency, 1, 1_000, 'transactions at once');
  whole('batchSize', batchSize, 1, 10_000, 'messages per transaction');
  if (typeof retry !== 'object' || retry === null || Array.isArray(retry)) throw new Error(`consume(${name}): retry (${JSON.stringify(retry)}) must be an object such as { maxAttempts: 8, baseMs: 1000, maxMs: 60000 }.`);
  // An option given as undefined takes its default, as an absent one does.
  const policy = { ...DEFAULT_RETRY, ...Object.fromEntries(Object.entries(retry).filter(([, v]) => v !== undefined)) };
  whole('retry.maxAttempts', policy.maxAttempts, 1, 100, 'failed deliveries before a message is parked');
  whole('retry.baseMs', policy.baseMs, 1, MAX_TIMER_MS, 'ms of the first retry delay');
  whole('retry.maxMs', policy.maxMs, policy.baseMs, MAX_TIMER_MS, 'ms, the cap of any retry delay, at least retry.baseMs');
  for (const [key, value] of Object.entries({ transactionTimeoutMs, inboxPruneIntervalMs })) {
    if (!(Number.isInteger(value) && value > 0 && value <= MAX_TIMER_MS)) throw new Error(`consume(${name}): ${key} (${value}) must be a whole number of ms above 0 and at most ${MAX_TIMER_MS}.`);
  }
  if (inboxRetentionMs !== null && !(Number.isFinite(inboxRetentionMs) && inboxRetentionMs >= 0)) {
    throw new Error(`consume(${name}): inboxRetentionMs (${inboxRetentionMs}) must be a number of ms from 0, or null to keep the inbox for ever.`);
  }
  const queues = consumerQueues(name);
  const delays = retryDelays(policy);
  const maxAttempts = delays.length + 1;
  // A message whose transaction committed but whose ack was lost (the COMMIT's answer never
  // came) can go round the delay queues and come back that late: its inbox row must still be there.
  const retryCycleMs = delays.reduce((a, b) => a + b, 0);
  if (inboxRetentionMs !== null && inboxRetentionMs < retryCycleMs) {
    throw new Error(`consume(${name}): inboxRetentionMs (${inboxRetentionMs}${options.inboxRetentionMs === undefined ? ', the default' : ''}) must be at least the retry cycle, ${retryCycleMs} ms (the sum of the retry delays): a message that took effect can come back that late, and only its inbox row stops a second effect.`);
  }
  const events: ConsumerEvents = new EventEmitter<ConsumerEventMap>();
  const emit = <K extends keyof ConsumerEventMap>(n: K, ...args: ConsumerEventMap[K]) => safeEmitConsumer(events, n, ...args);
  // Messages not yet in a transaction, in arrival order; aggregates held by running transactions.
  let pending: Delivery[] = [];
  // Holds on each aggregate: one per running batch with messages of it, one per copy of its
  // messages on the way to a delay or parking queue. Held aggregates wait.
  const busy = new Map<string, number>();
  const hold = (key: string) => void busy.set(key, (busy.get(key) ?? 0) + 1);
  /** Gives one hold on `key` back; true if that freed it. */
  const unhold = (key: string) => {
    const n = (busy.get(key) ?? 0) - 1;
    if (n > 0) busy.set(key, n);
    else busy.delete(key);
    return n <= 0;
  };
  const running = new Set<Promise<void>>();
  // Copies on their way to a delay or parking queue (retryOrPark): awaited by stop(), but not
  // counted against `concurrency`, so that a copy the broker refuses for a while holds only its
  // own aggregate, not a transaction's place.
  const copying = new Set<Promise<void>>();

  /** Tracks `copy` (see `copying`), holding `key`'s aggregate, if given, until it settles. */
  function trackCopy(copy: Promise<void>, key?: string) {
    if (key !== undefined) hold(key);
    const tracked: Promise<void> = copy.finally(() => {
      copying.delete(tracked);
      if (key !== undefined && unhold(key) && !stopped) scheduleDispatch();
    });
    copying.add(tracked);
  }
  let dispatchScheduled = false;
  let recheck: NodeJS.Timeout | null = null;
  let current: Generation | null = null;
  let stopped = false;
  let stopCall: Promise<void> | null = null;
  const stopping = new AbortController();
  // Aborted once stop() has waited STOP_GRACE_MS: transactions still running then (a handler
  // waiting on something that never answers) end, and their connections go back to the pool.
  const abandon = new AbortController();
  let reconnecting: Promise<void> | null = null;
  // A connection the broker drops within 10 s of opening counts as a failed attempt, so a broker
  // that accepts and then drops every connection is not reconnected to ~5 times a second.
  const reconnectBackoff = new ReconnectBackoff({ baseMs: 250, maxMs: 5_000, stableMs: 10_000 });

  async function open(): Promise<Generation> {
    const conn = await connectAmqp(amqpUrl, `${name}-consumer`);
    coalesceWrites(conn);
    let pubConn: ChannelModel | null = null;
    let gen: Generation | null = null;
    try {
      // RabbitMQ blocks a connection that publishes while a memory or disk alarm lasts, and then
      // reads nothing more from it: acks sent on it would wait for the alarm to end, prefetch
      // would fill, and the consumer that could drain the backlog behind the alarm would stop.
      pubConn = await connectAmqp(amqpUrl, `${name}-consumer-copies`);
      const ch = await conn.createChannel();
      const pub = await pubConn.createConfirmChannel();
      const g: Generation = { conn, ch, pubConn, pub, acks: new AckWindow(ch), alive: true, opening: true };
      gen = g;
      const lost = (error?: unknown) => onLost(g, error);
      conn.on('close', lost);
      pubConn.on('close', lost);
      ch.on('close', lost);
      pub.on('close', lost);
      ch.on('error', (error: unknown) => emit('consumer:error', { queue: name, component: 'amqp', error }));
      pub.on('error', (error: unknown) => emit('consumer:error', { queue: name, component: 'amqp', error }));
      await declareConsumerTopology(ch, { exchange, queues, bindings, delays });
      await ch.prefetch(prefetch);
      if (stopped) throw new Error('consumer stopped');
      current = gen;
      const { consumerTag } = await ch.consume(queues.events, (msg) => onMessage(g, msg), { noAck: false });
      gen.tag = consumerTag;
      gen.opening = false;
      if (gen.lostWhileOpening) throw gen.lostWhileOpening;
      reconnectBackoff.opened();
      emit('consumer:connected', { queue: name });
      return gen;
    } catch (err) {
      if (gen) retire(gen);
      await Promise.all([closeAmqp(conn), pubConn && closeAmqp(pubConn)]);
      throw err;
    }
  }

  /** A generation's deliveries not yet started are dropped: the broker redelivers them. */
  function retire(gen: Generation) {
    gen.alive = false;
    pending = pending.filter((d) => d.gen !== gen);
  }

  function onLost(gen: Generation, error?: unknown) {
    if (!gen.alive) return;
    if (gen.opening) {
      gen.lostWhileOpening ??= error ?? new Error('the broker connection closed while the consumer was starting');
      return;
    }
    retire(gen);
    reconnectBackoff.closed();
    void gen.conn.close().catch(() => {});
    void gen.pubConn.close().catch(() => {});
    if (stopped) return;
    emit('consumer:connection:lost', { queue: name, error });
    reconnect();
  }

  /** Connects again (or for the first time, in the background) with backoff until it consumes or stops. */
  function reconnect() {
    reconnecting ??= (async () => {
      while (!stopped) {
        await sleep(reconnectBackoff.delay(), stopping.signal);
        if (stopped) break;
        try {
          await open();
          break;
        } catch (error) {
          reconnectBackoff.failed();
          emit('consumer:error', { queue: name, component: 'amqp', error });
        }
      }
    })().finally(() => {
      reconnecting = null;
    });
  }

  function onMessage(gen: Generation, msg: ConsumeMessage | null) {
    if (!msg) return onLost(gen, new Error(`the broker cancelled the consumer of ${queues.events} (queue deleted?)`));
    if (!gen.alive || stopped) return;
    gen.acks.delivered(msg);
    let event: ReceivedEvent;
    try {
      event = fromMessage(msg);
    } catch (err) {
      trackCopy(retryOrPark(gen, msg, null, (err as Error).message, true));
      return;
    }
    pending.push({ gen, msg, event, key: `${event.aggregateType}\u0000${event.aggregateId}`, at: performance.now() });
    scheduleDispatch();
  }

  /**
   * Batches form after this turn's I/O callbacks ran: messages that arrived together (a relay
   * batch arrives in one or a few socket reads) go into one transaction, not one each.
   */
  function scheduleDispatch() {
    if (dispatchScheduled) return;
    dispatchScheduled = true;
    setImmediate(() => {
      dispatchScheduled = false;
      dispatch();
    });
  }

  /** Starts transactions for the pending messages, within `concurrency`, one aggregate per transaction at a time. */
  function dispatch() {
    if (recheck) {
      clearTimeout(recheck);
      recheck = null;
    }
    while (!stopped && pending.length && running.size < concurrency) {
      // While a transaction runs, a young backlog smaller than a batch waits for it (see
      // PARALLEL_AFTER_MS): known from the oldest pending message, before splitting `pending`.
      if (running.size && pending.length < batchSize && waitForRunning(pending[0]!.at)) return;
      // Take, in arrival order, every message whose aggregate no running transaction holds, up
      // to batchSize; once an aggregate is skipped, so are its later messages (order).
      const skipped = new Set<string>();
      const batch: Delivery[] = [];
      const rest: Delivery[] = [];
      let bytes = 0;
      const gen = pending.find((d) => !busy.has(d.key))?.gen;
      for (const d of pending) {
        if (batch.length < batchSize && bytes < BATCH_MAX_BYTES && d.gen === gen && !busy.has(d.key) && !skipped.has(d.key)) {
          batch.push(d);
          bytes += d.msg.content.length;
        } else {
          skipped.add(d.key);
          rest.push(d);
        }
      }
      if (!batch.length) return; // every pending aggregate is held: the running transactions call dispatch again
      // The batch is in arrival order: its first message is its oldest.
      if (running.size && batch.length < batchSize && bytes < BATCH_MAX_BYTES && waitForRunning(batch[0]!.at)) return;
      pending = rest;
      const keys = new Set(batch.map((d) => d.key));
      for (const k of keys) hold(k);
      const run: Promise<void> = processBatch(batch)
        // Not expected (processBatch handles failures): drop the connection so that the broker
        // redelivers whatever this batch left unacknowledged.
        .catch((error: unknown) => onLost(batch[0]!.gen, error))
        .finally(() => {
          for (const k of keys) unhold(k);
          running.delete(run);
          if (!stopped) dispatch();
        });
      running.add(run);
    }
  }

  /**
   * Whether the database answers a probe on a connection of its own (see
   * MAX_TRANSIENT_RETRIES_WHILE_DB_ANSWERS). Run like a batch, with the same bound: a probe that
   * got an established connection to a database gone silent would otherwise hold that connection
   * of the pool until the operating system gave up on it, one more with each probe.
   */
  async function databaseAnswers(): Promise<boolean> {
    let answered = false;
    await settlesWithin(
      consumerTransaction(db, (_, connection) => connection.query('begin; select 1'), { timeoutMs: DB_PROBE_TIMEOUT_MS, signal: abandon.signal }).then(
        () => void (answered = true),
        () => {},
      ),
      DB_PROBE_TIMEOUT_MS,
    );
    return answered;
  }

  /** True, with a dispatch scheduled for when it has waited PARALLEL_AFTER_MS, if a message that arrived at `at` is younger than that. */
  function waitForRunning(at: number): boolean {
    const waited = performance.now() - at;
    if (waited >= PARALLEL_AFTER_MS) return false;
    recheck = setTimeout(dispatch, PARALLEL_AFTER_MS - waited);
    return true;
  }

  /**
   * Applies a batch in one transaction; on failure, each of its messages alone. The copies of
   * failed and gapped messages go on in the background (trackCopy), holding their aggregates.
   */
  async function processBatch(batch: Delivery[]): Promise<void> {
    const spans = tracingEnabled() ? new ConsumerSpans(name, batch) : null;
    const gen = batch[0]!.gen;
    let contention = 0;
    let transientWhileUp = 0;
    for (let attempt = 0; ; attempt++) {
      if (!gen.alive) return spans?.endAll('redelivered: the channel closed'); // the broker redelivers them
      let outcomes: Outcome[];
      try {
        outcomes = await applyBatch(
          db,
          { consumer: name, handler, acceptFirstSeen, ignoreOrigin, timeoutMs: transactionTimeoutMs, signal: abandon.signal, ...(spans ? { traceparents: spans.traceparents } : {}) },
          batch.map((d) => d.event),
        );
      } catch (err) {
        const code = (err as { code?: string }).code;
        const contended = typeof code === 'string' && CONTENTION_CODES.has(code);
        if (stopped) return spans?.endAll('redelivered: the consumer stopped'); // the broker redelivers them
        const retryInPlace = contended
          ? ++contention <= MAX_CONTENTION_RETRIES
          : isTransientDbError(err) && (!(await databaseAnswers()) || ++transientWhileUp <= MAX_TRANSIENT_RETRIES_WHILE_DB_ANSWERS);
        if (retryInPlace) {
          emit('consumer:error', { queue: name, component: 'db', error: err });
          await sleep(contended ? 10 * contention : 50 + backoffDelay(attempt, { baseMs: 250, maxMs: 5_000 }), stopping.signal);
          if (stopped) return spans?.endAll('redelivered: the consumer stopped');
          continue;
        }
        if (batch.length > 1) {
          // Find the failing message: one transaction each, in order.
          spans?.endAll('retried alone: its batch failed');
          for (const d of batch) await processBatch([d]);
          return;
        }
        emit('consumer:error', { queue: name, component: 'handler', error: err });
        spans?.endAll(undefined, err);
        trackCopy(retryOrPark(gen, batch[0]!.msg, batch[0]!.event, describe(err), false), batch[0]!.key);
        return;
      }
      spans?.endWith(outcomes);
      const applied: ReceivedEvent[] = [];
      let duplicates = 0;
      let ignored = 0;
      const done: ConsumeMessage[] = [];
      batch.forEach((d, i) => {
        const o = outcomes[i]!;
        if (o.kind === 'gap') {
          trackCopy(retryOrPark(gen, d.msg, d.event, `version gap: ${d.event.aggregateType} ${d.event.aggregateId} is at version ${o.local ?? 'none'} here, event has ${d.event.aggregateVersion}`, false), d.key);
          return;
        }
        if (o.kind === 'applied') applied.push(d.event);
        else if (o.kind === 'duplicate') duplicates++;
        else ignored++;
        done.push(d.msg);
      });
      ack(gen, done);
      emit('consumer:batch:committed', { queue: name, applied, duplicates, ignored });
      return;
    }
  }

  /**
   * Sends a failed delivery to the delay queue of its attempt, or parks it; acks the original once
   * the copy is confirmed. A copy the broker refuses (CopyRefusedError) is sent again with
   * backoff for up to COPY_REFUSED_GIVE_UP_MS, the original held meanwhile: dropping the
   * connection would have the broker redeliver every unacknowledged message, again at each
   * refusal. Other failures, and a refusal that outlasts that, drop the connection, the
   * original unacked: a returned copy (its queue was deleted; the reconnect declares it again), a
   * copy not confirmed in time (it may still land: sent again, it could land twice).
   */
  async function retryOrPark(gen: Generation, msg: ConsumeMessage, event: ReceivedEvent | null, error: string, malformed: boolean) {
    const since = performance.now();
    for (let failures = 0; ; failures++) {
      try {
        await sendRetryOrParkCopy(gen, msg, event, error, malformed);
        return;
      } catch (err) {
        emit('consumer:error', { queue: name, component: 'amqp', error: err });
        // Stopping: not acked, so redelivered to the next consumer; stop() closes the channels.
        if (!gen.alive || stopped) return;
        if (!(err instanceof CopyRefusedError) || performance.now() - since >= COPY_REFUSED_GIVE_UP_MS) return onLost(gen, err);
        await sleep(50 + backoffDelay(failures, { baseMs: 250, maxMs: 5_000 }), stopping.signal);
        if (!gen.alive || stopped) return;
      }
    }
  }

  async function sendRetryOrParkCopy(gen: Generation, msg: ConsumeMessage, event: ReceivedEvent | null, error: string, malformed: boolean) {
    const attempts = (event?.attempts ?? attemptsOf(msg.properties.headers)) + 1;
    const id = event?.id ?? String(msg.properties.messageId ?? '(no id)');
    const reason = error.slice(0, 1_000);
    if (malformed || attempts >= maxAttempts) {
      await confirmed(sendCopy(gen.pub, queues.dead, msg, {
        [HEADERS.attempts]: attempts,
        [HEADERS.parkedError]: reason,
        [HEADERS.parkedAt]: new Date().toISOString(),
        [HEADERS.lastError]: null,
      }));
      ack(gen, [msg]);
      emit('consumer:message:parked', { queue: name, id, attempts, error: reason });
    } else {
      const delayMs = delays[attempts - 1]!;
      await confirmed(sendCopy(gen.pub, queues.delay(delayMs), msg, { [HEADERS.attempts]: attempts, [HEADERS.lastError]: reason }));
      ack(gen, [msg]);
      emit('consumer:message:retrying', { queue: name, id, attempts, delayMs, error: reason });
    }
  }

  /** A copy's confirm, or a rejection once COPY_CONFIRM_TIMEOUT_MS have passed without one. */
  async function confirmed(copy: Promise<void>): Promise<void> {
    if (!(await settlesWithin(copy, COPY_CONFIRM_TIMEOUT_MS))) throw new Error(`the broker did not confirm the copy within ${COPY_CONFIRM_TIMEOUT_MS} ms (a memory or disk alarm blocking publishers?)`);
    await copy;
  }

  function ack(gen: Generation, msgs: ConsumeMessage[]) {
    if (!gen.alive || !msgs.length) return;
    try {
      gen.acks.finish(msgs);
    } catch {
      // channel already closed: the message is redelivered and the inbox absorbs it
    }
  }

  if (connectInBackground) reconnect();
  else await open();
  const pruning = inboxRetentionMs === null ? null : pruneLoop(inboxRetentionMs);

  return {
    queue: name,
    events,
    get connected() {
      return !stopped && !!current?.alive && !current.opening;
    },
    stop() {
      // A second call waits for the first one's work: resolving at once would let its caller
      // destroy the pool under transactions still running.
      stopCall ??= stopConsumer();
      return stopCall;
    },
  };

  /** Deletes this consumer's inbox rows past retention, a minute after the start and then every inboxPruneIntervalMs. */
  async function pruneLoop(retentionMs: number): Promise<void> {
    await sleep(Math.min(60_000, inboxPruneIntervalMs), stopping.signal);
    while (!stopped) {
      try {
        const count = await pruneInbox(db, name, retentionMs, { signal: stopping.signal });
        if (count) emit('consumer:inbox:pruned', { queue: name, count });
      } catch (error) {
        if (!stopped) emit('consumer:error', { queue: name, component: 'db', error });
      }
      await sleep(inboxPruneIntervalMs, stopping.signal);
    }
  }

  async function stopConsumer(): Promise<void> {
    stopped = true;
    stopping.abort();
    const gen = current;
    // Every step is bounded: a broker that stopped answering (a partition) cannot hang stop().
    if (gen?.alive && gen.tag) await settlesWithin(gen.ch.cancel(gen.tag), 2_000);
    pending = [];
    if (recheck) clearTimeout(recheck);
    // Running transactions finish; a prune in progress ends after its current statement. Those
    // still running after the grace are abandoned: their connections go back to the pool (the
    // caller destroys it next, which would otherwise wait for them), their messages are redelivered.
    // Copies a batch started (its failures) are in `copying` once `running` settled: both within the grace.
    const graceEnds = performance.now() + STOP_GRACE_MS;
    await settlesWithin(Promise.allSettled([...running, ...(pruning ? [pruning] : [])]), STOP_GRACE_MS);
    await settlesWithin(Promise.allSettled([...copying]), Math.max(0, graceEnds - performance.now()));
    abandon.abort(new Error('the consumer stopped'));
    await settlesWithin(Promise.allSettled([...running]), 1_000);
    // A reconnect in flight notices `stopped` and closes what it opened, however late.
    if (reconnecting) await settlesWithin(reconnecting, 2_000);
    const last = current;
    if (last) {
      // Channel close handshakes first: the broker then has processed our last acks, which a
      // bare connection close can drop (they would only come back as harmless redeliveries).
      const wasAlive = last.alive;
      // Finished messages held back behind abandoned ones: acknowledged now, or the next
      // consumer would get them again (and a retried one would then circulate twice).
      if (wasAlive) {
        try {
          last.acks.ackFinishedAlone();
        } catch {
          // channel already closing: they are redelivered and the inbox absorbs them
        }
      }
      last.alive = false; // from here on, channel 'close' events are ours, not a loss
      if (wasAlive) await settlesWithin(Promise.all([last.ch.close(), last.pub.close()]), 2_000);
      await Promise.all([closeAmqp(last.conn), closeAmqp(last.pubConn)]);
    }
    emit('consumer:stopped', { queue: name });
  }
}

function describe(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  return typeof e?.code === 'string' ? `${e.code}: ${msg}` : msg;
}

/**
 * One span per delivery a transaction handles (`process <event type>`), continuing the trace of
 * the publication (its traceparent header); ended with the outcome: applied, duplicate, ignored,
 * gap (sent round the delay queues), or failed (retried alone, retried later or parked).
 */
class ConsumerSpans {
  private readonly spans = new Map<string, SpanHandle>();
  readonly traceparents = new Map<string, string>();
  private readonly ids: string[];

  constructor(queue: string, batch: Delivery[]) {
    this.ids = batch.map((d) => d.event.id);
    for (const { event, msg } of batch) {
      if (this.spans.has(event.id)) continue; // the same message twice in a batch: one span
      const span = startSpan(`process ${event.type}`, 'consumer', event.traceparent, {
        'messaging.system': 'rabbitmq',
        'messaging.operation.type': 'process',
        'messaging.destination.name': `${queue}.events`,
        'messaging.rabbitmq.destination.routing_key': msg.fields.routingKey,
        'messaging.message.id': event.id,
        'messaging.batch.message_count': batch.length,
        'strangler.aggregate': `${event.aggregateType}/${event.aggregateId}`,
        'strangler.aggregate_version': event.aggregateVersion,
        'strangler.attempts': event.attempts,
      });
      this.spans.set(event.id, span);
      this.traceparents.set(event.id, span.traceparent);
    }
  }

  /** Ends each span with its delivery's outcome (applyBatch's, one per delivery, in order). */
  endWith(outcomes: Outcome[]): void {
    this.ids.forEach((id, i) => {
      const span = this.spans.get(id);
      if (!span) return;
      this.spans.delete(id);
      span.setAttributes({ 'strangler.outcome': outcomes[i]!.kind });
      span.end();
    });
  }

  endAll(failed?: string, error?: unknown): void {
    for (const span of this.spans.values()) span.end(error !== undefined ? { error } : { failed: failed! });
    this.spans.clear();
  }
}
