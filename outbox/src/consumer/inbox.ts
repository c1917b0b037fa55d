import type { Knex } from 'knex';

/**
 * The statements that open a consumer's transaction and record its messages as dealt with, as
 * ONE simple query (one round trip instead of a BEGIN of its own and then the insert). The
 * insert returns the ids that were not there yet. From then on the database ends the
 * transaction if it idles longer than `idleTimeoutMs` between statements (its client gone
 * silent), releasing the inbox rows it holds. A message another open transaction is recording
 * makes the insert wait for that transaction: committed, it counts as seen; rolled back, it is ours.
 *
 * A simple query cannot take parameters, so every value is a literal quoted by `quote` (the pg
 * connection's escapeLiteral): ids and types come from the broker and may hold anything.
 */
export function beginAndClaimSql(quote: (value: string) => string, consumer: string, events: Array<{ id: string; type: string }>, idleTimeoutMs: number): string {
  const texts = (values: string[]) => `array[${values.map(quote).join(',')}]::text[]`;
  return `begin;
    set local idle_in_transaction_session_timeout = ${Math.max(1, Math.round(idleTimeoutMs))};
    insert into inbox (consumer, message_id, event_type)
      select ${quote(consumer)}, id, type from unnest(${texts(events.map((e) => e.id))}, ${texts(events.map((e) => e.type))}) as m(id, type)
      on conflict do nothing
      returning message_id`;
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
