import type pg from 'pg';
import type { OutboxRow } from '../envelope.ts';
import { OUTBOX_XID_TRIGGER } from '../schema.ts';

const MARK_SET = 'published_at = now(), attempts = attempts + 1, last_error = null, next_attempt_at = null';

/** How `last_error` begins for a row the broker closed the channel over (PublishResult.refusedByBroker). */
export const REFUSED_BY_BROKER = 'refused by the broker';

// The floor's candidates (ClaimFloor): at most one transaction id taken per this interval.
const CANDIDATE_INTERVAL_MS = 100;

/**
 * The claim query: the oldest unpublished rows that are due, in `seq` order: those never refused
 * through `outbox_pending_idx`, from the floor up ($4, see ClaimFloor), those whose retry is due
 * through `outbox_retry_idx` (schema.ts), so refused rows that are not due yet are never walked.
 * No high-water mark: a transaction that commits late with a lower `seq` is simply found by the
 * next claim, since the floor never passes a transaction still running. No row locks either:
 * only the leader claims (relay/leader.ts), and it runs this on the very session that holds the
 * lease, so a relay that lost its lease cannot claim or mark anything.
 *
 * The same statement first marks published the rows confirmed since the previous claim ($3):
 * one round trip per cycle instead of two. The selects run on the statement's snapshot, which
 * does not see that update, so they leave those rows out themselves.
 *
 * Every result row (one with nulls when nothing is due) also carries what ClaimFloor needs:
 * `high`, the highest `seq` committed (on the statement's snapshot); `xid`, only when $6 asks
 * for it, this statement's own transaction id, handed out after that snapshot was taken;
 * `matured`, whether every transaction with an id below $5 has ended; `lowest`, the lowest
 * pending `seq` from the floor up that is neither in flight nor confirmed.
 *
 * `refused_before`: the broker closed the channel over this row the last time (the relay then
 * publishes it alone).
 */
const RAW = 'id, seq, aggregate_type, aggregate_id, aggregate_version, event_type, payload, headers, created_at, last_error';
const COLUMNS = `id, seq, aggregate_type, aggregate_id, aggregate_version, event_type, payload::text as payload, headers, created_at,
  (last_error like '${REFUSED_BY_BROKER}:%') is true as refused_before, stored_bytes`;

/**
 * Bytes of payload, as stored (pg_column_size: compressed when Postgres compressed it), after
 * which a claim takes no further row: it ends with the row that reaches this, or with its first
 * row, however large. A row count alone let a backlog of large events (the writer takes up to 16
 * MiB each) make every claim run past the lease session's statement timeout or the relay out of
 * memory, every time again: nothing, not even later small events, was published. Stored bytes
 * are what Postgres can count without reading the payloads; a payload it compressed well takes
 * more memory than it counts for here.
 */
export const CLAIM_MAX_STORED_BYTES = 2 * 1024 * 1024;
/**
 * Leaves out the rows in flight ($2) and those confirmed since the last claim ($3). As a hashed
 * subplan: the claim runs as a generic plan (relay/leader.ts), in which `seq <> all($2)` compares
 * every row it passes with every element, and the scan passes every row in flight. Measured
 * here, a 500-row claim past 600 rows in flight: 1.9 ms of backend CPU instead of 4.0. The
 * arrays never hold a null, which would make NOT IN reject every row.
 */
const NOT_IN_FLIGHT = 'seq not in (select unnest($2::bigint[] || $3::bigint[]))';
const PENDING = `published_at is null and next_attempt_at is null and seq >= $4 and ${NOT_IN_FLIGHT}`;
/**
 * The last value the `seq` sequence handed out (null where the relay's role may not read it):
 * caps `high`, so that a row whose `seq` was given by hand above the sequence (OVERRIDING SYSTEM
 * VALUE, a copy from another database, a sequence reset) cannot lift the floor above every value
 * the sequence will draw next, which would leave every later event to the periodic full scan. A
 * lower `high` only keeps the floor lower, so it is safe whenever it is read.
 */
const SEQUENCE_LAST_VALUE = `(select case when has_sequence_privilege(s, 'SELECT,USAGE') then pg_sequence_last_value(s::regclass) end
    from pg_get_serial_sequence('outbox', 'seq') s)`;
export const CLAIM_SQL = `
  with marked as (update outbox set ${MARK_SET} where seq = any($3::bigint[])),
  meta as (
    select least((select max(seq) from outbox), ${SEQUENCE_LAST_VALUE}) as high,
           case when $6::boolean then pg_current_xact_id()::text end as xid,
           coalesce(pg_snapshot_xmin(pg_current_snapshot()) >= $5::xid8, false) as matured,
           (select seq from outbox where ${PENDING} order by seq limit 1) as lowest)
  select meta.high, meta.xid, meta.matured, meta.lowest, due.*
    from meta left join (
      -- Payloads are selected raw, so a large one stays in TOAST until the text conversion of a
      -- row the byte budget ($7) keeps: each row whose predecessors' stored payloads are under it.
      select ${COLUMNS} from (
        select u.*, pg_column_size(u.payload) as stored_bytes, sum(pg_column_size(u.payload)) over (order by u.seq) as upto from (
          (select ${RAW} from outbox where ${PENDING} order by seq limit $1)
          union all
          (select ${RAW} from outbox
            where published_at is null and next_attempt_at <= now()
              and ${NOT_IN_FLIGHT}
            order by next_attempt_at limit $1)
        ) u
        order by u.seq
        limit $1
      ) b
      where b.upto - b.stored_bytes < $7
    ) due on true
   order by due.seq`;

/** What a claim tells ClaimFloor (see CLAIM_SQL). */
export interface ClaimMeta {
  high: number | null;
  xid: string | null;
  matured: boolean;
  lowest: number | null;
}

/**
 * Marks `confirmed` rows published and claims up to `limit` rows, leaving out `inFlight`
 * (published, confirms awaited) and the confirmed rows; pending rows only from `floor.start` up.
 * Advances `floor` when given one.
 */
export async function claimBatch(session: pg.Client, limit: number, inFlight: number[] = [], confirmed: number[] = [], floor?: ClaimFloor): Promise<OutboxRow[]> {
  // A trigger dropped or disabled, or a sequence altered, while this relay leads: noticed here.
  if (floor?.fullScanDue) floor.setSupported(await claimFloorSupported(session));
  const { start, horizon, fullScan, candidate } = floor ? floor.next() : { start: 0, horizon: null, fullScan: true, candidate: false };
  const { rows } = await session.query<OutboxRow & ClaimMeta>({ name: 'strangler_outbox_claim', text: CLAIM_SQL, values: [limit, inFlight, confirmed, start, horizon, candidate, CLAIM_MAX_STORED_BYTES] });
  const claimed = rows[0]!.id === null ? [] : rows;
  floor?.advance(rows[0]!, inFlight, fullScan, claimed.length);
  return claimed;
}

/**
 * Where the leader's claims start in `outbox_pending_idx`. Publishing a row updates it, which
 * leaves a dead index entry behind until VACUUM: a claim from the lowest `seq` steps over every
 * row published since (schema.ts, createOutboxXidTrigger, has the figures). Claims start from
 * this floor instead, and every row below it is published, refused (then in `outbox_retry_idx`)
 * or rolled back.
 *
 * Why that holds though transactions commit out of `seq` order: with the outbox's trigger, a
 * transaction has its id before it draws a `seq`, and with a sequence that caches nothing, seqs
 * are drawn in time order. A claim that takes a candidate reads `high`, the highest committed
 * `seq`, on its snapshot, and then takes a transaction id of its own, `xid`. A transaction that
 * drew a `seq` at or below `high` drew it before `high` was drawn, so before that snapshot, and
 * had its id before that: below `xid`, since ids are handed out in order. (Not below the
 * snapshot's xmax, which is one past the highest id that has ended: a transaction with a higher
 * id can be running.) Once a later claim's snapshot has every transaction below `xid` ended
 * (`matured`), every row at or below `high` is visible to it or never will be; the floor then
 * rises to `high + 1`, but no higher than the lowest pending row that claim saw or any row still
 * in flight (published, not yet marked). Rows in flight may come back (a failed batch is claimed
 * again); confirmed ones are marked by the claim itself.
 *
 * A candidate costs a transaction id (and a commit record): one is taken at most every
 * CANDIDATE_INTERVAL_MS, and only once rows were claimed since the last, so an idle relay takes
 * none.
 *
 * Without the trigger, or with a sequence that caches values, the floor stays at 0: claims then
 * start from the lowest `seq`, as they always did. And every `fullScanIntervalMs` the leader
 * checks that again and one claim starts from 0 regardless, lowering the floor to the lowest
 * pending row it finds: a row set back to unpublished by hand (`published_at = null`), or one
 * whose `seq` was given by hand (OVERRIDING SYSTEM VALUE, a sequence reset), is published
 * within that time.
 */
export class ClaimFloor {
  private value = 0;
  private candidate: { high: number; xid: string } | null = null;
  // A claim found the candidate not matured yet.
  private blocked = false;
  private lastCandidateAt = -Infinity;
  private claimedSinceCandidate = 0;
  private lastFullScan = performance.now();

  constructor(
    private on: boolean,
    private readonly fullScanIntervalMs: number,
  ) {}

  get enabled(): boolean {
    return this.on;
  }

  /** Whether the next claim is a full scan, before which the leader checks the outbox again (claimFloorSupported). */
  get fullScanDue(): boolean {
    return performance.now() - this.lastFullScan >= this.fullScanIntervalMs;
  }

  /** The outbox's support checked again: without it the floor goes back to 0 and stays off. */
  setSupported(supported: boolean): void {
    this.on = supported;
    if (!supported) {
      this.value = 0;
      this.candidate = null;
      this.blocked = false;
    }
  }

  /**
   * How long the floor has been held back: since its candidate was taken, once a later claim
   * found it not matured; 0 otherwise. A candidate normally matures by the next claim; it cannot
   * while a transaction that took its id before the candidate's is still open anywhere in the
   * cluster (a long write, or a prepared transaction nobody finished). Meanwhile the floor stays
   * where it is, and claims step over what is published above it, as without a floor. A lower
   * bound of that transaction's age.
   */
  heldMs(now = performance.now()): number {
    return this.on && this.candidate && this.blocked ? now - this.lastCandidateAt : 0;
  }

  /** The lowest `seq` the next pending claim reads. */
  get start(): number {
    return this.value;
  }

  /** $4 (start), $5 (horizon) and $6 (candidate) of the next claim, and whether it is a full scan. */
  next(): { start: number; horizon: string | null; fullScan: boolean; candidate: boolean } {
    const now = performance.now();
    const due = this.fullScanDue;
    if (due) this.lastFullScan = now;
    if (!this.on) return { start: 0, horizon: null, fullScan: true, candidate: false };
    const candidate = !this.candidate && this.claimedSinceCandidate > 0 && now - this.lastCandidateAt >= CANDIDATE_INTERVAL_MS;
    const horizon = this.candidate?.xid ?? null;
    if (due) return { start: 0, horizon, fullScan: true, candidate };
    return { start: this.value, horizon, fullScan: false, candidate };
  }

  /** After a claim that left out `inFlight` (its $2) and returned `claimed` rows. */
  advance(meta: ClaimMeta, inFlight: number[], fullScan: boolean, claimed: number): void {
    if (!this.on) return;
    this.claimedSinceCandidate += claimed;
    if (fullScan && meta.lowest !== null && meta.lowest < this.value) this.value = meta.lowest;
    if (meta.matured && this.candidate) {
      let next = this.candidate.high + 1;
      if (meta.lowest !== null) next = Math.min(next, meta.lowest);
      for (const seq of inFlight) if (seq < next) next = seq;
      if (next > this.value) this.value = next;
      this.candidate = null;
      this.blocked = false;
    } else if (this.candidate) this.blocked = true; // this claim checked it (its horizon, $5)
    if (meta.xid !== null && meta.high !== null) {
      this.candidate = { high: meta.high, xid: meta.xid };
      this.lastCandidateAt = performance.now();
      this.claimedSinceCandidate = 0;
    }
  }
}

/**
 * Whether the outbox lets the relay use a claim floor: the trigger that gives a transaction its
 * id before its `seq` is there and enabled ALWAYS (so it fires for writers with
 * `session_replication_role = replica` too), and the `seq` sequence caches nothing.
 */
export async function claimFloorSupported(session: pg.Client): Promise<boolean> {
  const { rows } = await session.query<{ ok: boolean }>(
    `select exists (select 1 from pg_trigger where tgrelid = 'outbox'::regclass and tgname = $1 and tgenabled = 'A')
        and coalesce((select seqcache from pg_sequence where seqrelid = pg_get_serial_sequence('outbox', 'seq')::regclass), 0) = 1 as ok`,
    [OUTBOX_XID_TRIGGER],
  );
  return rows[0]?.ok === true;
}

/** Marks confirmed rows published, in one statement. */
export async function markPublished(session: pg.Client, seqs: number[]): Promise<void> {
  if (!seqs.length) return;
  await session.query({ name: 'strangler_outbox_mark', text: `update outbox set ${MARK_SET} where seq = any($1::bigint[])`, values: [seqs] });
}

/**
 * Records a row the broker refused (unroutable or nacked) and schedules its next try: attempt n
 * waits min(60 s, 2^n s), i.e. 2, 4, 8, 16, 32, 60, 60 ... s, so a missing binding costs one
 * query a minute per row rather than a hot loop, and an added binding is picked up within a minute.
 */
export async function markRejected(session: pg.Client, rejected: Array<{ seq: number; reason: string }>): Promise<void> {
  if (!rejected.length) return;
  await session.query(
    `update outbox o
        set attempts = o.attempts + 1, last_error = r.reason,
            next_attempt_at = now() + least(60, power(2, least(o.attempts + 1, 6))) * interval '1 second'
       from unnest($1::bigint[], $2::text[]) as r(seq, reason)
      where o.seq = r.seq`,
    [rejected.map((r) => r.seq), rejected.map((r) => r.reason)],
  );
}

/**
 * Age in seconds of the oldest unpublished row, or 0 when the outbox is drained. A confirmed row
 * counts until the relay marks it: with its next claim while polls are short, else at once.
 */
export const LAG_SQL = `select coalesce(extract(epoch from now() - least(
    (select created_at from outbox where published_at is null and next_attempt_at is null order by seq limit 1),
    (select min(created_at) from outbox where published_at is null and next_attempt_at is not null))), 0)::float8 as lag`;

/** Unpublished rows refused at least once (unroutable, nacked, unencodable, refused by the broker), through `outbox_retry_idx`. */
export const REFUSED_SQL = `select count(*)::int as n from outbox where published_at is null and next_attempt_at is not null`;
