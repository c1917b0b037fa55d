import type pg from 'pg';
import type { OutboxRow } from '../envelope.ts';

const MARK_SET = 'published_at = now(), attempts = attempts + 1, last_error = null, next_attempt_at = null';

/** How `last_error` begins for a row the broker closed the channel over (PublishResult.refusedByBroker). */
export const REFUSED_BY_BROKER = 'refused by the broker';

/**
 * The claim query: the oldest unpublished rows that are due, in `seq` order: those never refused
 * through `outbox_pending_idx`, those whose retry is due through `outbox_retry_idx`
 * (schema.ts), so refused rows that are not due yet are never walked. No high-water mark: a
 * transaction that commits late with a lower `seq` is simply found by the next claim. No row
 * locks either: only the leader claims (relay/leader.ts), and it runs this on the very session
 * that holds the lease, so a relay that lost its lease cannot claim or mark anything.
 *
 * The same statement first marks published the rows confirmed since the previous claim ($3):
 * one round trip per cycle instead of two. The selects run on the statement's snapshot, which
 * does not see that update, so they leave those rows out themselves.
 *
 * `refused_before`: the broker closed the channel over this row the last time (the relay then
 * publishes it alone).
 */
const COLUMNS = `id, seq, aggregate_type, aggregate_id, aggregate_version, event_type, payload::text as payload, headers, created_at,
  (last_error like '${REFUSED_BY_BROKER}:%') is true as refused_before`;
export const CLAIM_SQL = `
  with marked as (update outbox set ${MARK_SET} where seq = any($3::bigint[]))
  select * from (
    (select ${COLUMNS} from outbox
      where published_at is null and next_attempt_at is null
        and seq <> all($2::bigint[]) and seq <> all($3::bigint[])
      order by seq limit $1)
    union all
    (select ${COLUMNS} from outbox
      where published_at is null and next_attempt_at <= now()
        and seq <> all($2::bigint[]) and seq <> all($3::bigint[])
      order by next_attempt_at limit $1)
  ) due
  order by seq
  limit $1`;

/**
 * Marks `confirmed` rows published and claims up to `limit` rows, leaving out `inFlight`
 * (published, confirms awaited) and the confirmed rows.
 */
export async function claimBatch(session: pg.Client, limit: number, inFlight: number[] = [], confirmed: number[] = []): Promise<OutboxRow[]> {
  const { rows } = await session.query<OutboxRow>({ name: 'strangler_outbox_claim', text: CLAIM_SQL, values: [limit, inFlight, confirmed] });
  return rows;
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
