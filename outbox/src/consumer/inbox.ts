import type { Knex } from 'knex';

const CLAIM_SQL = `insert into inbox (consumer, message_id, event_type)
     select $1, id, type from unnest($2::text[], $3::text[]) as m(id, type)
     on conflict do nothing
     returning message_id`;

/** The transaction's own pg connection, when knex exposes it (knex's pg client does). */
interface PgConn {
  query(config: { name: string; text: string; values: unknown[] }): Promise<{ rows: Array<{ message_id: string }> }>;
}

const isPg = (knex: Knex) => (knex.client as { dialect?: string }).dialect === 'postgresql';

async function connectionOf(trx: Knex.Transaction): Promise<PgConn | null> {
  if (!isPg(trx)) return null;
  const conn = (await trx.client.acquireConnection()) as Partial<PgConn> | undefined;
  return typeof conn?.query === 'function' ? (conn as PgConn) : null;
}

/**
 * Records these messages as dealt with, in the caller's transaction, and returns the ids that
 * were not there yet. A message another open transaction is recording makes this statement wait
 * for that transaction: committed, it counts as seen; rolled back, it is ours.
 *
 * Sent on the transaction's own connection as a prepared statement rather than through knex:
 * the same statement in the same transaction, without knex's per-query work and Postgres's
 * parse and plan on every batch.
 */
export async function inboxClaim(trx: Knex.Transaction, consumer: string, events: Array<{ id: string; type: string }>): Promise<Set<string>> {
  if (!events.length) return new Set();
  const values = [consumer, events.map((e) => e.id), events.map((e) => e.type)];
  const conn = await connectionOf(trx);
  const { rows } = conn
    ? await conn.query({ name: 'strangler_inbox_claim', text: CLAIM_SQL, values })
    : await trx.raw<{ rows: Array<{ message_id: string }> }>(CLAIM_SQL.replace(/\$\d/g, '?'), values);
  return new Set(rows.map((r) => r.message_id));
}

/** Takes messages out of the inbox again (within the same transaction): they will be retried. */
export async function inboxRelease(trx: Knex.Transaction, consumer: string, ids: string[]): Promise<void> {
  await trx.raw('delete from inbox where consumer = ? and message_id = any(?::text[])', [consumer, ids]);
}

/** Deletes inbox rows older than `olderThanMs` (keep them well beyond any redelivery: days). */
export async function pruneInbox(knex: Knex, consumer: string, olderThanMs: number): Promise<number> {
  const res = await knex.raw(`delete from inbox where consumer = ? and processed_at < now() - ? * interval '1 millisecond'`, [consumer, olderThanMs]);
  return res.rowCount ?? 0;
}
