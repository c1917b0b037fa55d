import type { Knex } from 'knex';
import { createOutboxIndexes } from '@strangler/outbox';

/**
 * The outbox's claim indexes (createOutboxIndexes): rows refused by the broker leave the index
 * the relay claims new rows through. Built concurrently, so writes go on meanwhile; a no-op on an
 * outbox created with them.
 */
export const config = { transaction: false };
export const up = (knex: Knex) => createOutboxIndexes(knex, { concurrently: true });
export async function down(knex: Knex): Promise<void> {
  await knex.raw('create index concurrently if not exists outbox_unpublished_idx on outbox (seq) where published_at is null');
  await knex.raw('drop index concurrently if exists outbox_pending_idx');
  await knex.raw('drop index concurrently if exists outbox_retry_idx');
}
