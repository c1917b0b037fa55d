import type { Knex } from 'knex';
import { OUTBOX_PUBLISHED } from './schema.ts';

const COLUMNS = 'id, seq, aggregate_type, aggregate_id, aggregate_version, event_type, payload, headers, created_at, attempts';

/**
 * Sets published events (outbox ids) back to unpublished, so that the relay publishes them
 * again: moved back from `outbox_published` into `outbox`, with their `seq`, or, for rows a relay
 * marked published in place, their `published_at` cleared. Their `seq` lies below the leader's
 * claim floor, so they go out with its next full scan (`RELAY_FULL_SCAN_INTERVAL_MS`, a minute
 * by default). Consumers take them for redeliveries (the inbox) or stale versions.
 *
 * A row that cannot go back (the outbox holds a row with its id, or another row with its
 * aggregate version) stays where it is. Returns the ids set back.
 */
export async function republish(knex: Knex, ids: string[]): Promise<string[]> {
  if (!ids.length) return [];
  return knex.transaction(async (trx) => {
    const back: string[] = [];
    if (await trx.schema.hasTable(OUTBOX_PUBLISHED)) {
      const { rows } = await trx.raw<{ rows: Array<{ id: string }> }>(
        `insert into outbox (${COLUMNS}) overriding system value
           select ${COLUMNS} from ${OUTBOX_PUBLISHED} where id = any(?::uuid[])
           on conflict do nothing
           returning id`,
        [ids],
      );
      const moved = rows.map((r) => r.id);
      if (moved.length) await trx.raw(`delete from ${OUTBOX_PUBLISHED} where id = any(?::uuid[])`, [moved]);
      back.push(...moved);
    }
    const inPlace = await trx('outbox').whereIn('id', ids).whereNotNull('published_at').update({ published_at: null }, ['id']);
    back.push(...inPlace.map((r: { id: string }) => r.id));
    return back;
  });
}
