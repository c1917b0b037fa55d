import type { Knex } from 'knex';
import { createOutboxIndexes, dropOutboxIndexes } from '@strangler/outbox';

/**
 * The outbox's claim indexes (createOutboxIndexes): rows refused by the broker leave the index
 * the relay claims new rows through. Built concurrently, so writes go on meanwhile; a no-op on an
 * outbox created with them.
 */
export const config = { transaction: false };
export const up = (knex: Knex) => createOutboxIndexes(knex, { concurrently: true });
export const down = (knex: Knex) => dropOutboxIndexes(knex, { concurrently: true });
