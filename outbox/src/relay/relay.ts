import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { createDb, EVENTS_EXCHANGE, MAX_TIMER_MS, settlesWithin, sleep, type Knex, type PgConnection, type ReadinessCheck } from '@strangler/platform';
import { OUTBOX_CHANNEL } from '../schema.ts';
import { CLAIM_MAX_STORED_BYTES, ClaimFloor, claimBatch, claimFloorSupported, LAG_SQL, markPublished, markRejected, REFUSED_BY_BROKER, REFUSED_SQL } from './claim.ts';
import { safeEmit, type RelayEventMap, type RelayEvents } from './events.ts';
import { LeaderLease, type Tenure } from './leader.ts';
import { OutboxListener } from './listener.ts';
import { Publisher } from './publisher.ts';
import { runRetention } from './retention.ts';
import { Wakeup } from './wakeup.ts';
import type { OutboxRow } from '../envelope.ts';

export interface RelayOptions {
  /** The publishing database (one relay per database). */
  connection: PgConnection;
  /** amqp:// URL of the broker. */
  amqpUrl: string;
  /** Topic exchange to publish to (declared durable if missing). Default `strangler.events`. */
  exchange?: string;
  /** Most rows claimed and published per batch. Default 500. */
  batchSize?: number;
  /**
   * Fallback poll while waiting for NOTIFY (or the only poll when `notify` is false): a lost
   * notification costs at most this much latency. Default 1,000 ms.
   */
  pollIntervalMs?: number;
  /**
   * Wake on LISTEN/NOTIFY (default true). When false the relay does not listen, keeps the
   * trigger silent (`outbox_relay.notify = false`) and polls every `pollIntervalMs`.
   */
  notify?: boolean;
  /**
   * Poll interval while busy (NOTIFY switched off because events arrive faster than 100/s), as
   * long as they arrive slower than `busyRampFromPerSec`. Default 2 ms.
   */
  busyPollMs?: number;
  /**
   * Poll interval while events arrive at `busyRampToPerSec` or faster; in between it grows
   * linearly from `busyPollMs` to this. Default 100 ms, or `busyPollMs` if that is higher. See
   * BUSY_RAMP_FROM_PER_SEC.
   */
  busyPollMaxMs?: number;
  /** Events/s above which the busy poll starts to grow (latency gives way to batching). Default 600. */
  busyRampFromPerSec?: number;
  /** Events/s at which the busy poll reaches `busyPollMaxMs`; above `busyRampFromPerSec`. Default 1,000. */
  busyRampToPerSec?: number;
  /**
   * How often a claim starts from the lowest `seq` instead of the floor the leader keeps
   * (relay/claim.ts, ClaimFloor): a row set back to unpublished by hand is published within this
   * time. Default 60,000 ms.
   */
  fullScanIntervalMs?: number;
  /**
   * The leader warns (`relay:claim:floor:held`) once its claim floor has been held back this
   * long by a transaction still open (see Relay.claimFloorHeldSeconds). Default 60,000 ms.
   */
  claimFloorHeldWarnMs?: number;
  /** A batch whose confirms take longer than this is abandoned and retried. Default 10,000 ms. */
  confirmTimeoutMs?: number;
  /** How often a follower tries to take the leader lease. Default 1,000 ms. */
  leaseRetryMs?: number;
  /** Published rows are deleted once older than this. Default 24 h; 0 deletes at the next sweep. */
  retentionMs?: number;
  /** How often retention runs. Default 60,000 ms. */
  retentionIntervalMs?: number;
  /** Prefix of the Postgres application_name and AMQP connection name. Default `strangler-relay`. */
  applicationName?: string;
  /** This process in logs, metrics and `outbox_relay.leader`. Default `<host>:<pid>:<random>`. */
  instance?: string;
}

export interface Relay {
  readonly instance: string;
  readonly events: RelayEvents;
  readonly isLeader: boolean;
  /** Starts connecting, listening and competing for the lease; resolves at once. */
  start(): Promise<void>;
  /**
   * Finishes the batch in flight (at most ~4 s), gives up the lease and closes every connection,
   * each close bounded (~2 s) even if a server stopped answering: within ~17 s in all, usually
   * well under a second (`npm run relay` exits 10 s after SIGTERM regardless).
   */
  stop(): Promise<void>;
  /** Age in seconds of the oldest unpublished row (0 when drained). */
  lagSeconds(): Promise<number>;
  /** Unpublished rows refused at least once and waiting for their retry (a lag with a cause to look at). */
  refusedRows(): Promise<number>;
  /**
   * While this relay leads: how long its claim floor (relay/claim.ts, ClaimFloor) has been held
   * back by a transaction that is still open somewhere in the Postgres cluster, or a prepared
   * one never finished; 0 when it is not held or this relay does not lead (ClaimFloor.heldMs).
   * Held, claims get slower as rows are published, until that transaction ends.
   */
  claimFloorHeldSeconds(): number;
  /** Checks for `/readyz`: the database answers and the broker connection is open. */
  readinessChecks(): Record<string, ReadinessCheck>;
}

// NOTIFY is switched off while events arrive faster than BUSY_ABOVE per second and back on once
// the rate stays under IDLE_BELOW for a whole window. Why so low: notifying commits serialise
// on a cluster-wide lock held through the commit, and on a loaded 2-core machine the holder gets
// descheduled, so the lock convoys: measured here, 16 producers fell from ~1,900 commits/s to
// ~490/s with the relay listening, and commit-to-applied p50 rose to ~36 ms. Polling every
// busyPollMs (2 ms) costs up to ~500 cheap index probes a second and adds at most that much latency.
const BUSY_ABOVE_PER_SEC = 100;
const IDLE_BELOW_PER_SEC = 20;
const RATE_WINDOW_MS = 250;
// While busy, batches grow with the rate: the poll interval is busyPollMs up to
// busyRampFromPerSec and grows linearly to busyPollMaxMs at busyRampToPerSec. Every poll
// cycle costs about the same whatever it carries: a claim round trip, a broker round trip and,
// in each consumer, a transaction. Measured in bench/outbox.ts on 2 cores: ~2 ms of CPU across
// the processes involved per cycle (mostly their wake-ups and socket writes), so short polls cost
// most of a core once every poll finds something, which a loaded machine takes from the
// producers. Below the ramp latency wins (a 2 ms poll adds at most 2 ms); on it throughput does:
// at the top of the ramp a cycle every 100 ms carries 160 events or more, and the pipeline
// (relay, broker, consumer and their Postgres backends) took ~190 µs of CPU per event, against
// ~1,500 µs at 500/s with 2 ms polls.
//
// The rate that drives it is the relay's own (rows claimed per RATE_WINDOW_MS), smoothed so that
// it rises over about RATE_RISE_MS and falls at once. Falling does not even wait for the end of
// a window when one long poll brings in less than half of what the rate predicts (and it
// predicted enough rows for that to be no accident): the backlog a short stall leaves behind
// (a checkpoint, a slow broker) looks like a burst and may stretch one poll, not the next ones,
// and when the load goes down latency comes back right away.
//
// Where the ramp lies is a trade between machines: it must start above the rates at which
// latency matters and end below the rate the producers reach when they saturate the machine,
// or the short polls take CPU from them for good. The defaults (600 to 1,000/s) were measured on
// two 2-core machines, one about twice as fast per operation as the other: their producers
// saturate at ~2,700/s and ~1,000/s (~1,800/s once the polls are long). The old ramp (800 to
// 1,600/s) gave the slower one 0.5 to 0.65 of its plain commit rate; this one 0.73 to 0.91.
const BUSY_RAMP_FROM_PER_SEC = 600;
const BUSY_RAMP_TO_PER_SEC = 1_000;
const RATE_RISE_MS = 1_000;
// After switching NOTIFY back on, a transaction whose trigger ran while it was off may commit
// after the catch-up sweep without notifying: one extra sweep shortly after catches it if it
// committed by then; a later one waits for the fallback poll (pollIntervalMs).
const SETTLE_SWEEP_MS = 50;
// Batches awaiting confirms at once: the broker's confirm latency (~1-5 ms here) then overlaps
// with claiming and publishing the next rows instead of adding to every row's latency.
const MAX_IN_FLIGHT = 4;

const storedBytes = (rows: OutboxRow[]): number => {
  let n = 0;
  for (const r of rows) n += r.stored_bytes ?? 0;
  return n;
};
// A leader whose broker connection has been down this long (a network problem of its own host,
// say) ends its tenure: another relay that has a connection takes over within a lease retry, and
// this one competes again once it is connected.
const BROKER_LOST_HANDOVER_MS = 15_000;
// A tenure that ends in an error sooner than this after it began counts as a failure in a row;
// see leadRetryDelay.
const LEAD_FAILURE_WINDOW_MS = 30_000;
const LEAD_RETRY_MAX_MS = 10_000;
// Confirmed rows wait for the next claim to be marked (one statement for both) only while the
// busy poll is this short; with longer sleeps ahead, they are marked on their own at once.
const MARK_WITH_NEXT_CLAIM_MS = 10;

/**
 * The outbox relay: publishes every committed outbox row of one database to the exchange,
 * at least once, in `seq` order, marking a row published only after its broker confirm.
 *
 * Invariants: only the lease holder (relay/leader.ts) claims, publishes and marks; it never keeps
 * a high-water mark, so rows that commit late are published by the next claim; NOTIFY only wakes
 * it early (fallback poll, catch-up sweep on every listener reconnect and on taking the lease).
 *
 * Failure modes: a lost database session ends the tenure (the lease is retaken or another relay
 * takes over, republishing what was not marked: duplicates, never losses); a lost broker
 * connection pauses publishing until the publisher reconnects; a refused row (unroutable,
 * nacked) is kept with `last_error` and retried with a backoff while later rows proceed, so
 * per-aggregate order then rests on the consumers' version rule.
 */
export function createRelay(options: RelayOptions): Relay {
  const opts = {
    exchange: EVENTS_EXCHANGE,
    batchSize: 500,
    pollIntervalMs: 1_000,
    notify: true,
    busyPollMs: 2,
    busyPollMaxMs: 100,
    busyRampFromPerSec: BUSY_RAMP_FROM_PER_SEC,
    busyRampToPerSec: BUSY_RAMP_TO_PER_SEC,
    confirmTimeoutMs: 10_000,
    fullScanIntervalMs: 60_000,
    claimFloorHeldWarnMs: 60_000,
    leaseRetryMs: 1_000,
    retentionMs: 24 * 3_600_000,
    retentionIntervalMs: 60_000,
    applicationName: 'strangler-relay',
    instance: `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`,
    ...stripUndefined(options),
  };
  // Only a maximum given explicitly can contradict the minimum: a busyPollMs above the default
  // maximum alone raises it (busy polls never shorter than asked).
  if (options.busyPollMaxMs === undefined) opts.busyPollMaxMs = Math.max(opts.busyPollMs, opts.busyPollMaxMs);
  for (const name of ['pollIntervalMs', 'busyPollMs', 'busyPollMaxMs', 'confirmTimeoutMs', 'fullScanIntervalMs', 'claimFloorHeldWarnMs', 'leaseRetryMs', 'retentionIntervalMs'] as const) {
    if (!(opts[name] > 0 && opts[name] <= MAX_TIMER_MS)) throw new Error(`createRelay: ${name} (${opts[name]}) must be above 0 and at most ${MAX_TIMER_MS} ms.`);
  }
  if (!(Number.isInteger(opts.batchSize) && opts.batchSize >= 1 && opts.batchSize <= 10_000)) {
    throw new Error(`createRelay: batchSize (${opts.batchSize}) must be a whole number of rows from 1 to 10000.`);
  }
  if (!(Number.isFinite(opts.retentionMs) && opts.retentionMs >= 0)) {
    throw new Error(`createRelay: retentionMs (${opts.retentionMs}) must be a number of ms from 0 (how long published rows are kept).`);
  }
  if (opts.busyPollMaxMs < opts.busyPollMs) {
    throw new Error(`createRelay: busyPollMaxMs (${opts.busyPollMaxMs}) must be at least busyPollMs (${opts.busyPollMs}): the busy poll grows from the one to the other as events arrive faster.`);
  }
  if (!(opts.busyRampFromPerSec >= 0 && opts.busyRampToPerSec > opts.busyRampFromPerSec)) {
    throw new Error(`createRelay: busyRampToPerSec (${opts.busyRampToPerSec}) must be above busyRampFromPerSec (${opts.busyRampFromPerSec}), both events/s.`);
  }
  const events: RelayEvents = new EventEmitter<RelayEventMap>();
  const emit = <K extends keyof RelayEventMap>(name: K, ...args: RelayEventMap[K]) => safeEmit(events, name, ...args);
  const instance = opts.instance;
  const wakeup = new Wakeup();
  const stopping = new AbortController();
  let pool: Knex | null = null;
  let lease: LeaderLease | null = null;
  let listener: OutboxListener | null = null;
  let publisher: Publisher | null = null;
  let tasks: Promise<unknown>[] = [];
  let leading = false;
  let started = false;
  // The leader's, for claimFloorHeldSeconds(); null between tenures.
  let leaderFloor: ClaimFloor | null = null;

  function publisherFor(): Publisher {
    return new Publisher({
      url: opts.amqpUrl,
      exchange: opts.exchange,
      connectionName: `${opts.applicationName}:${instance}`,
      confirmTimeoutMs: opts.confirmTimeoutMs,
      onConnected: () => {
        emit('relay:amqp:connected');
        wakeup.notify();
      },
      onError: (error) => emit('relay:amqp:error', { error }),
      onBlocked: (reason) => emit('relay:amqp:blocked', { reason }),
      onUnblocked: () => emit('relay:amqp:unblocked'),
    });
  }

  async function setNotify(session: pg.Client, on: boolean) {
    await session.query('update outbox_relay set notify = $1 where id = 1 and notify is distinct from $1', [on]);
  }

  /**
   * One tenure as leader: sweep, then publish as rows appear, until the lease is lost or we stop.
   * Up to MAX_IN_FLIGHT batches await their confirms at once; a claim skips the rows in flight,
   * so waiting for the broker never holds back rows committed meanwhile. Confirmed rows are
   * marked by the next claim (the same statement), or on their own when no claim is coming.
   */
  async function lead(tenure: Tenure, pub: Publisher) {
    const signal = AbortSignal.any([tenure.signal, stopping.signal]);
    const { session } = tenure;
    // Batches awaiting their confirms: their rows, and the publisher's channel generation.
    const inFlight = new Map<Promise<void>, { seqs: number[]; generation: number }>();
    const staleBatches = () => [...inFlight].filter(([, b]) => b.generation !== pub.generation).map(([batch]) => batch);
    let confirmed: number[] = []; // confirmed, not yet marked: left out of claims until marked
    // Rows to publish one at a time: those a batch left unconfirmed when the broker closed the
    // channel over a message it would not take (PublishResult.refusedByBroker).
    let isolating = 0;
    let failure: unknown = null;
    let transportFailed = false;
    let mode: 'notify' | 'busy' | 'poll' = opts.notify ? 'notify' : 'poll';
    await setNotify(session, opts.notify);
    emit('relay:mode', { mode });
    const floor = new ClaimFloor(await claimFloorSupported(session), opts.fullScanIntervalMs);
    let floorEnabled = floor.enabled;
    let floorHeldWarned = false;
    emit('relay:claim:floor', { enabled: floorEnabled });
    leaderFloor = floor;
    let windowStart = performance.now();
    let windowCount = 0;
    let settleAt = 0;
    let sleeping = false;
    let smoothedPerSec = 0;
    // When the previous claim started, and whether the relay slept a busy poll since.
    let previousClaimAt = 0;
    let polled = false;
    const ramp = { fromPerSec: opts.busyRampFromPerSec, toPerSec: opts.busyRampToPerSec, minMs: opts.busyPollMs, maxMs: opts.busyPollMaxMs };
    const busyPollMs = () => busyPollFor(smoothedPerSec, ramp);
    // Confirmed rows are marked on their own, now, unless a claim follows within a short poll.
    const markAlone = () => mode !== 'busy' || busyPollMs() > MARK_WITH_NEXT_CLAIM_MS;

    /** Publishes one batch and records the outcome; resolves false if the broker connection failed under it. */
    async function publishRows(rows: OutboxRow[], alone: boolean): Promise<boolean> {
      const started = performance.now();
      const result = await pub.publish(rows);
      if (result.refusedByBroker) {
        const settled = new Set([...result.confirmed, ...result.rejected.map((r) => r.row)]);
        const unsettled = rows.filter((r) => !settled.has(r));
        // Published alone, with nothing else on the channel: this row is the one.
        if (alone && unsettled.length === 1) result.rejected.push({ row: unsettled[0]!, kind: 'refused', reason: `${REFUSED_BY_BROKER}: ${result.refusedByBroker}` });
        else isolating += unsettled.length;
      }
      // What the broker confirmed is safe even when the batch failed part-way. It is marked by
      // the next claim when that comes within a short poll; otherwise now, on its own: a relay
      // that dies with confirmed rows unmarked makes the next leader publish them again.
      if (sleeping && markAlone()) await markPublished(session, result.confirmed.map((r) => r.seq));
      else for (const r of result.confirmed) confirmed.push(r.seq);
      await markRejected(session, result.rejected.map((r) => ({ seq: r.row.seq, reason: r.reason })));
      for (const r of result.rejected) emit('relay:publish:rejected', { id: r.row.id, eventType: r.row.event_type, kind: r.kind, reason: r.reason });
      if (result.transportError) emit('relay:batch:failed', { count: rows.length - result.confirmed.length - result.rejected.length, error: result.transportError });
      if (result.confirmed.length || result.rejected.length) {
        emit('relay:batch:published', { count: result.confirmed.length, failed: result.rejected.length, durationMs: performance.now() - started });
      }
      return !result.transportError;
    }

    /** Publishes rows as one batch in flight; resolves once it settled (never rejects: the outcome is in `failure` and `transportFailed`). */
    function publishBatch(batchRows: OutboxRow[], alone: boolean): Promise<void> {
      const batch: Promise<void> = publishRows(batchRows, alone).then(
        (ok) => void (transportFailed ||= !ok),
        (err) => void (failure ??= err),
      );
      inFlight.set(batch, { seqs: batchRows.map((r) => r.seq), generation: pub.generation });
      void batch.finally(() => inFlight.delete(batch));
      return batch;
    }

    wakeup.notify(); // catch-up sweep on taking the lease
    try {
      while (!signal.aborted) {
        if (failure) throw failure;
        if (transportFailed) {
          // Let every batch of the failed connection settle before claiming its rows again, so
          // they go out in order on the next connection.
          await Promise.all(inFlight.keys());
          transportFailed = false;
        }
        if (confirmed.length && !pub.isReady) await markPublished(session, confirmed.splice(0)); // no claim until the broker is back
        // A leader that cannot reach the broker hands the lease to one that can (see
        // BROKER_LOST_HANDOVER_MS); while it waits, nothing is claimed.
        if (!(await pub.ready(signal, BROKER_LOST_HANDOVER_MS))) {
          if (signal.aborted) break;
          throw new BrokerLost(`no broker connection for ${BROKER_LOST_HANDOVER_MS / 1_000} s: giving up the lease to a relay that has one`);
        }
        if (transportFailed) continue; // a batch failed while we waited: settle it first
        // The publisher reconnected before a batch of the old connection noticed its loss (it was
        // waiting for `drain`, say): that batch settles first, or rows claimed now would go out
        // on the new connection ahead of the ones it did not get confirmed.
        const stale = staleBatches();
        if (stale.length) {
          await Promise.all(stale);
          continue;
        }
        const marking = confirmed;
        confirmed = [];
        const claimedAt = performance.now();
        let rows: OutboxRow[];
        try {
          rows = await claimBatch(session, isolating ? 1 : opts.batchSize, [...inFlight.values()].flatMap((b) => b.seqs), marking, floor);
        } catch (err) {
          confirmed = marking.concat(confirmed);
          throw err;
        }
        // A claim the row count or the byte budget cut short: more is waiting.
        const full = rows.length === opts.batchSize || storedBytes(rows) >= CLAIM_MAX_STORED_BYTES;
        if (polled && !full) {
          // What this claim found arrived since the previous one started (a full claim says
          // only that there was at least that much).
          smoothedPerSec = rateAfterPoll(smoothedPerSec, rows.length, claimedAt - previousClaimAt);
        }
        polled = false;
        previousClaimAt = claimedAt;
        // The floor turned off (or on) by the check before a full scan; or held back.
        if (floor.enabled !== floorEnabled) {
          floorEnabled = floor.enabled;
          emit('relay:claim:floor', { enabled: floorEnabled });
        }
        const heldMs = floor.heldMs();
        if (heldMs < opts.claimFloorHeldWarnMs) floorHeldWarned = false;
        else if (!floorHeldWarned) {
          floorHeldWarned = true;
          emit('relay:claim:floor:held', { seconds: Math.round(heldMs / 100) / 10 });
        }
        // The same two checks again: the connection may have failed during the claim. The rows
        // are simply claimed again, in order, once the failed batches settled.
        if (transportFailed || staleBatches().length) continue;
        if (!rows.length) isolating = 0; // nothing left to isolate (refused, or published meanwhile)
        const suspect = isolating ? undefined : rows.find((r) => r.refused_before);
        if (suspect) {
          // A row the broker closed the channel over before goes out alone when its retry is
          // due, after the other rows of the claim and with nothing else on the channel:
          // refused again, it costs one channel and no other row. In a batch it would fail the
          // batch, whose unconfirmed rows would then be isolated and sent again, every time its
          // retry came round. One such row per claim, so that however many are due, the others
          // keep flowing. Then claim again at once.
          const others = rows.filter((r) => !r.refused_before);
          if (others.length) void publishBatch(others, false);
          await Promise.all(inFlight.keys());
          if (!failure && !transportFailed) await publishBatch([suspect], true);
          continue;
        }
        if (rows.length) {
          // While isolating, each row goes out alone and settles before the next is claimed.
          const alone = isolating > 0 && inFlight.size === 0;
          const batch = publishBatch(rows, alone);
          if (alone) {
            await batch;
            isolating--;
          } else if (inFlight.size >= MAX_IN_FLIGHT) await Promise.race(inFlight.keys());
        }
        if (signal.aborted) break;
        windowCount += rows.length;
        const now = performance.now();
        if (opts.notify && now - windowStart >= RATE_WINDOW_MS) {
          const perSec = (windowCount * 1_000) / (now - windowStart);
          smoothedPerSec = smoothRate(smoothedPerSec, perSec, now - windowStart);
          windowStart = now;
          windowCount = 0;
          if (mode === 'notify' && perSec > BUSY_ABOVE_PER_SEC) {
            mode = 'busy';
            await setNotify(session, false);
            emit('relay:mode', { mode });
          } else if (mode === 'busy' && perSec < IDLE_BELOW_PER_SEC) {
            mode = 'notify';
            await setNotify(session, true);
            emit('relay:mode', { mode });
            settleAt = now + SETTLE_SWEEP_MS;
            continue; // sweep right after switching, then once more at settleAt
          }
        }
        if (full || (isolating && rows.length)) continue; // backlog, or rows to isolate: claim again at once
        // A loop: a batch whose confirms come in during the await adds to `confirmed` (it sees
        // `sleeping` false), and nothing else would mark those before the next claim.
        while (confirmed.length && markAlone()) await markPublished(session, confirmed.splice(0));
        sleeping = true;
        try {
          if (mode === 'busy') {
            await sleep(busyPollMs(), signal);
            polled = true;
          } else if (settleAt > now) {
            await wakeup.wait(settleAt - now, signal);
            settleAt = 0;
          } else await wakeup.wait(opts.pollIntervalMs, signal);
        } finally {
          sleeping = false;
        }
      }
    } finally {
      leaderFloor = null;
      // Batches in flight finish (their confirms are worth marking) before the tenure ends.
      await Promise.all(inFlight.keys());
      if (confirmed.length && !tenure.signal.aborted) await markPublished(session, confirmed).catch((error: unknown) => emit('relay:db:error', { error }));
    }
    if (failure) throw failure;
  }

  async function leaderLoop(l: LeaderLease, pub: Publisher) {
    // Tenures that failed in a row, each soon after it began: the error may be in the data (a
    // row the relay cannot handle) or in the database, so the lease is retaken after a growing
    // pause (up to LEAD_RETRY_MAX_MS) instead of every 200 ms.
    let failures = 0;
    while (!stopping.signal.aborted) {
      // Only a relay that can publish competes for the lease.
      if (!(await pub.ready(stopping.signal))) break;
      emit('relay:leader:waiting', { instance });
      const tenure = await l.acquire(stopping.signal);
      if (!tenure) break;
      leading = true;
      emit('relay:leader:acquired', { instance });
      const began = performance.now();
      let error: unknown;
      try {
        await lead(tenure, pub);
      } catch (err) {
        error = err;
        if (!(err instanceof BrokerLost)) emit('relay:db:error', { error: err });
      } finally {
        leading = false;
      }
      if (stopping.signal.aborted) break;
      emit('relay:leader:lost', { instance, error: error ?? new Error('lease session lost') });
      failures = error && performance.now() - began < LEAD_FAILURE_WINDOW_MS ? failures + 1 : 0;
      // The session may be unusable (or the error may repeat): start over on a fresh one.
      await l.release();
      await sleep(200 + leadRetryDelay(failures), stopping.signal);
    }
  }

  return {
    instance,
    events,
    get isLeader() {
      return leading && !!lease?.held;
    },
    async start() {
      if (started) throw new Error('relay already started');
      started = true;
      pool = createDb(opts.connection, { applicationName: `${opts.applicationName}-pool`, pool: { max: 2 } });
      publisher = publisherFor();
      publisher.start();
      lease = new LeaderLease({
        connection: opts.connection,
        applicationName: opts.applicationName,
        instance,
        retryMs: opts.leaseRetryMs,
        onError: (error) => emit('relay:db:error', { error }),
      });
      if (opts.notify) {
        listener = new OutboxListener({
          connection: opts.connection,
          applicationName: `${opts.applicationName}-listen`,
          channel: OUTBOX_CHANNEL,
          onNotify: () => wakeup.notify(),
          onListening: () => {
            emit('relay:listen:connected');
            wakeup.notify();
          },
          onReconnecting: (attempt) => emit('relay:listen:reconnecting', { attempt }),
          onError: (error) => emit('relay:listen:error', { error }),
        });
        listener.start();
      }
      const l = lease;
      const p = publisher;
      tasks = [
        leaderLoop(l, p),
        runRetention(
          pool,
          {
            keepMs: opts.retentionMs,
            intervalMs: opts.retentionIntervalMs,
            isLeader: () => leading && l.held,
            onDeleted: (count) => emit('relay:retention:deleted', { count }),
            onError: (error) => emit('relay:retention:error', { error }),
          },
          stopping.signal,
        ),
      ];
      emit('relay:started', { instance });
    },
    async stop() {
      if (!started || stopping.signal.aborted) return;
      stopping.abort();
      wakeup.notify();
      // A batch in flight finishes (its confirms are worth marking); past 4 s, closing the
      // broker connection below fails its confirms and the rows are simply republished later.
      // Every step is bounded: 4 s here, then each close ~2 s (the publisher's and the listener's
      // up to 4 s, with a connect in flight). Normally all of it takes well under a second.
      await settlesWithin(Promise.allSettled(tasks), 4_000);
      await publisher?.stop();
      await settlesWithin(Promise.allSettled(tasks), 1_000);
      await lease?.release();
      await listener?.stop();
      if (pool) await settlesWithin(pool.destroy(), 2_000);
      emit('relay:stopped', { instance });
    },
    async lagSeconds() {
      if (!pool) return 0;
      const res = await pool.raw(LAG_SQL);
      return Number(res.rows[0]?.lag ?? 0);
    },
    async refusedRows() {
      if (!pool) return 0;
      const res = await pool.raw(REFUSED_SQL);
      return Number(res.rows[0]?.n ?? 0);
    },
    claimFloorHeldSeconds() {
      return (leaderFloor?.heldMs() ?? 0) / 1_000;
    },
    readinessChecks() {
      return {
        database: async () => {
          if (!pool) throw new Error('relay not started');
          await pool.raw('select 1');
        },
        broker: async () => {
          if (!publisher?.connected) throw new Error('no broker connection');
        },
      };
    },
  };
}

/**
 * Extra pause before retaking the lease after `failures` failed tenures in a row: none after a
 * tenure that went well, then 200-400 ms, 400-800 ms ... up to 5-10 s (LEAD_RETRY_MAX_MS). Half
 * of it is jitter; the other half is a floor, so a relay that keeps failing backs off for sure.
 */
function leadRetryDelay(failures: number): number {
  if (failures <= 0) return 0;
  const ceiling = Math.min(LEAD_RETRY_MAX_MS, 400 * 2 ** Math.min(failures - 1, 20));
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

/** The smoothed rate after a window of `windowMs` that saw `perSec`: up slowly, down at once (see RATE_RISE_MS). */
export function smoothRate(previous: number, perSec: number, windowMs: number): number {
  if (perSec <= previous) return perSec;
  return previous + (perSec - previous) * (1 - Math.exp(-windowMs / RATE_RISE_MS));
}

/**
 * The smoothed rate after a claim that followed a poll of `sinceMs` and found `rows`: the rate
 * it found if that is under half the smoothed rate and the smoothed rate predicted 50 rows or
 * more (fewer would be too noisy to tell), else the smoothed rate unchanged.
 */
export function rateAfterPoll(smoothed: number, rows: number, sinceMs: number): number {
  const predicted = (smoothed * sinceMs) / 1_000;
  return predicted >= 50 && rows < predicted / 2 ? (rows * 1_000) / sinceMs : smoothed;
}

export interface BusyRamp {
  fromPerSec: number;
  toPerSec: number;
  minMs: number;
  maxMs: number;
}

/** The busy-mode poll interval at `perSec` events a second (see BUSY_RAMP_FROM_PER_SEC). */
export function busyPollFor(perSec: number, { fromPerSec, toPerSec, minMs, maxMs }: BusyRamp): number {
  const f = (perSec - fromPerSec) / (toPerSec - fromPerSec);
  return Math.round(minMs + (maxMs - minMs) * Math.min(1, Math.max(0, f)));
}

/** Ends a tenure whose broker connection stayed down (BROKER_LOST_HANDOVER_MS); reported by relay:leader:lost. */
class BrokerLost extends Error {}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
