import type { Knex } from 'knex';

/**
 * Records these messages as dealt with, in the caller's transaction, and returns the ids that
 * were not there yet; from then on the database ends the transaction if it idles longer than
 * `idleTimeoutMs` between statements. A message another open transaction is recording makes
 * this statement wait for that transaction: committed, it counts as seen; rolled back, it is ours.
 */
export async function inboxClaim(trx: Knex.Transaction, consumer: string, events: Array<{ id: string; type: string }>, idleTimeoutMs: number): Promise<Set<string>> {
  if (!events.length) return new Set();
  // The set_config: the database ends this transaction if it idles longer than that between
  // statements (its client gone silent), releasing the inbox rows it holds; set here rather
  // than with a statement of its own, which would cost a round trip per transaction.
  const { rows } = await trx.raw<{ rows: Array<{ message_id: string }> }>(
    `insert into inbox (consumer, message_id, event_type)
     select ?, id, type from unnest(?::text[], ?::text[]) as m(id, type)
      where set_config('idle_in_transaction_session_timeout', ?, true) is not null
     on conflict do nothing
     returning message_id`,
    [consumer, events.map((e) => e.id), events.map((e) => e.type), String(Math.round(idleTimeoutMs))],
  );
  return new Set(rows.map((r) => r.message_id));
}

/** Takes messages out of the inbox again (within the same transaction): they will be retried. */
export async function inboxRelease(trx: Knex.Transaction, consumer: string, ids: string[]): Promise<void> {
  await trx.raw('delete from inbox where consumer = ? and message_id = any(?::text[])', [consumer, ids]);
}

/**
 * Deletes a consumer's inbox rows older than `olderThanMs` (keep them well beyond any
 * redelivery: days), in statements of at most `chunk` rows, each its own short transaction, so
 * a first prune of a large inbox neither holds locks nor bloats one transaction. Returns how
 * many rows went; stops early, between statements, once `signal` aborts.
 */
export async function pruneInbox(knex: Knex, consumer: string, olderThanMs: number, { chunk = 10_000, signal }: { chunk?: number; signal?: AbortSignal } = {}): Promise<number> {
  let deleted = 0;
  for (;;) {
    const res = await knex.raw(
      `delete from inbox where ctid = any(array(
         select ctid from inbox where consumer = ? and processed_at < now() - ? * interval '1 millisecond' limit ?))`,
      [consumer, olderThanMs, chunk],
    );
    deleted += res.rowCount ?? 0;
    if ((res.rowCount ?? 0) < chunk || signal?.aborted) return deleted;
  }
}
