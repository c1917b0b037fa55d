import type { Knex } from 'knex';

/**
 * Records these messages as dealt with, in the caller's transaction, and returns the ids that
 * were not there yet. A message another open transaction is recording makes this statement wait
 * for that transaction: committed, it counts as seen; rolled back, it is ours.
 */
export async function inboxClaim(trx: Knex.Transaction, consumer: string, events: Array<{ id: string; type: string }>): Promise<Set<string>> {
  if (!events.length) return new Set();
  const { rows } = await trx.raw<{ rows: Array<{ message_id: string }> }>(
    `insert into inbox (consumer, message_id, event_type)
     select ?, id, type from unnest(?::text[], ?::text[]) as m(id, type)
     on conflict do nothing
     returning message_id`,
    [consumer, events.map((e) => e.id), events.map((e) => e.type)],
  );
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
