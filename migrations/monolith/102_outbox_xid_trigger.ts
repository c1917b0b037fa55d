import type { Knex } from 'knex';
import { createOutboxXidTrigger, dropOutboxXidTrigger } from '@strangler/outbox';

/**
 * The outbox trigger that gives an inserting transaction its id before it draws a `seq`
 * (createOutboxXidTrigger): with it the relay starts its claims from a floor instead of stepping
 * over every row published since the last VACUUM. A no-op on an outbox created with it; the
 * relay notices at its next lease.
 */
export const up = (knex: Knex) => createOutboxXidTrigger(knex);
export const down = (knex: Knex) => dropOutboxXidTrigger(knex);
