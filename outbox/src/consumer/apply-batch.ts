import type { Knex } from 'knex';
import { newRequestId, runWithContext } from '@strangler/platform';
import type { ReceivedEvent } from '../envelope.ts';
import { beginAndClaimSql, inboxRelease } from './inbox.ts';
import { consumerTransaction } from './pg-transaction.ts';
import { decideVersion } from './version-rule.ts';

/**
 * What a consumer does with events, inside the transaction that also writes the inbox. The
 * transaction object (`trx`) is for the call it is given to: await every query on it before
 * returning, and do not keep it. The consumer commits when the handler resolves and rolls back
 * when it throws (`trx.commit()` and `trx.rollback()` are refused); it reuses one such object
 * per pooled connection, so a `trx` kept past its call fails while that connection is idle, but
 * would run inside a later batch's transaction.
 *
 * Give `apply` (and `versionOf`), or their batch forms `applyAll` (and `versionsOf`) to do a
 * whole batch in one statement each: measured in bench/outbox.ts, the batch forms cut the
 * consumer's per-event work from two statements to a fraction of one.
 */
export interface EventHandler<P = Record<string, unknown>> {
  /** The effect of one event. Throwing rolls the batch back; the message is retried through the delay queues. */
  apply?(trx: Knex.Transaction, event: ReceivedEvent<P>): Promise<void>;
  /** Batch form of `apply`: the effects of these events, in this order (several may concern one aggregate). */
  applyAll?(trx: Knex.Transaction, events: ReceivedEvent<P>[]): Promise<void>;
  /**
   * The version of the event's aggregate in this database (the entity's `version` column), or
   * null if the entity does not exist here. Given (or `versionsOf`): only the next version
   * applies (see version-rule.ts), and applying an event must set the entity's version to the
   * event's. Omitted: every new message applies (the inbox still stops redeliveries).
   */
  versionOf?(trx: Knex.Transaction, event: ReceivedEvent<P>): Promise<number | null>;
  /** Batch form of `versionOf`: one entry per event, in the same order. */
  versionsOf?(trx: Knex.Transaction, events: ReceivedEvent<P>[]): Promise<Array<number | null>>;
}

export type Outcome = { kind: 'applied' } | { kind: 'duplicate' } | { kind: 'ignored' } | { kind: 'gap'; local: number | null };

export interface ApplyOptions {
  consumer: string;
  handler: EventHandler;
  acceptFirstSeen: boolean;
  ignoreOrigin?: string;
  /** See ConsumeOptions.transactionTimeoutMs. */
  timeoutMs: number;
  /** Ends the transaction at once (consume.ts: a stopping consumer that waited long enough). */
  signal?: AbortSignal;
  /**
   * The traceparent each event's `apply` runs under (its consumer span's, consume.ts), by
   * event id; without one, the event's own. `applyAll` runs under the caller's context.
   */
  traceparents?: Map<string, string>;
}

/**
 * Applies a batch of events in ONE transaction, in order, with the inbox written in that same
 * transaction. The inbox rows are inserted first (`on conflict do nothing`): a message already
 * there is a duplicate, and a concurrent transaction holding the same message makes this one wait
 * for its outcome instead of applying twice. Gapped events are neither applied nor kept in the
 * inbox: the caller sends them round the delay queues. Events of one aggregate in one batch see
 * each other (v1 then v2 both apply). Any error rolls the whole batch back.
 */
export async function applyBatch(db: Knex, opts: ApplyOptions, events: ReceivedEvent[]): Promise<Outcome[]> {
  const { handler } = opts;
  if (!handler.apply && !handler.applyAll) throw new Error('EventHandler needs apply or applyAll.');
  // Past opts.timeoutMs the transaction ends (TransactionEnded, code ETIMEDOUT, which consume.ts
  // treats like a lost connection: retried in place while the database does not answer, else a
  // few times and then as a failed delivery), whether the database or the handler is slow.
  return consumerTransaction(db, async (trx, connection) => {
    // One result per statement (begin, set, insert): the insert's rows are the new messages.
    const results = (await connection.query(beginAndClaimSql((v) => connection.escapeLiteral(v), opts.consumer, events, opts.timeoutMs))) as Array<{ rows: Array<{ message_id: string }> }>;
    const fresh = new Set(results.at(-1)!.rows.map((r) => r.message_id));
    const outcomes: Outcome[] = [];
    const candidates: number[] = [];
    const seen = new Set<string>();
    events.forEach((event, i) => {
      if (!fresh.has(event.id) || seen.has(event.id)) outcomes[i] = { kind: 'duplicate' };
      else if (opts.ignoreOrigin !== undefined && event.origin === opts.ignoreOrigin) outcomes[i] = { kind: 'ignored' };
      else candidates.push(i);
      seen.add(event.id);
    });
    const toApply: ReceivedEvent[] = [];
    const gaps: string[] = [];
    if (handler.versionsOf || handler.versionOf) {
      const pending = candidates.map((i) => events[i]!);
      const versions = handler.versionsOf ? await handler.versionsOf(trx, pending) : null;
      // Read by position: a result with an entry missing (the rows found, not one per event)
      // would give events their neighbours' versions and ack unapplied ones as stale.
      if (versions && !(Array.isArray(versions) && versions.length === pending.length)) {
        throw new Error(
          `The handler's versionsOf returned ${Array.isArray(versions) ? `${versions.length} versions` : JSON.stringify(versions)} for ${pending.length} events: return one entry per event, in the order given (null where the entity does not exist here), e.g. events.map((e) => found.get(e.aggregateId) ?? null).`,
        );
      }
      // Versions as they stand after the events of this batch applied so far.
      const local = new Map<string, number | null>();
      for (const [k, i] of candidates.entries()) {
        const event = events[i]!;
        const key = `${event.aggregateType}\u0000${event.aggregateId}`;
        let current: number | null;
        if (local.has(key)) current = local.get(key)!;
        else if (versions) current = localVersion(versions[k], 'versionsOf');
        else {
          // Per-event form: earlier events of this batch must have taken effect first.
          if (toApply.length) await applyNow(trx, opts, toApply.splice(0));
          current = localVersion(await handler.versionOf!(trx, event), 'versionOf');
        }
        const decision = decideVersion(current, event.aggregateVersion, opts.acceptFirstSeen);
        if (decision === 'gap') {
          outcomes[i] = { kind: 'gap', local: current };
          gaps.push(event.id);
          local.set(key, current);
        } else if (decision === 'stale') {
          outcomes[i] = { kind: 'duplicate' };
          local.set(key, current);
        } else {
          outcomes[i] = { kind: 'applied' };
          toApply.push(event);
          local.set(key, event.aggregateVersion);
        }
      }
    } else {
      for (const i of candidates) {
        outcomes[i] = { kind: 'applied' };
        toApply.push(events[i]!);
      }
    }
    if (toApply.length) await applyNow(trx, opts, toApply);
    if (gaps.length) await inboxRelease(trx, opts.consumer, gaps);
    return outcomes;
  }, { timeoutMs: opts.timeoutMs, signal: opts.signal });
}

/**
 * The version a handler reported, as a number: null or undefined (no such entity) is null, and a
 * string of digits (a numeric or bigint column, which pg returns as text) its number; anything
 * else is the handler's bug, refused with what it returned (compared as it is, "1" + 1 would
 * be "11", and every later event a gap).
 */
function localVersion(value: unknown, from: string): number | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value;
  if (typeof value === 'string' && /^\d{1,15}$/.test(value)) return Number(value);
  throw new Error(`The handler's ${from} returned ${JSON.stringify(value)}: return the entity's version as a whole number, or null when it does not exist here.`);
}

async function applyNow(trx: Knex.Transaction, { handler, traceparents }: ApplyOptions, events: ReceivedEvent[]) {
  if (handler.applyAll) await handler.applyAll(trx, events);
  else {
    // Each event's effect runs in the context of the request that wrote it: its logs carry that
    // request id, and the events it appends in turn continue the trace.
    for (const e of events) {
      const traceparent = traceparents?.get(e.id) ?? e.traceparent;
      await runWithContext({ requestId: e.requestId ?? newRequestId(), ...(traceparent ? { traceparent } : {}) }, () => handler.apply!(trx, e));
    }
  }
}
