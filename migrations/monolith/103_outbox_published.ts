import type { Knex } from 'knex';
import { createOutboxPublished, dropOutboxPublished } from '@strangler/outbox';

/**
 * `outbox_published` (createOutboxPublished): the relay moves the rows it published there instead
 * of updating them in place, which cost the writers ~10% of their commits/s. A no-op on an
 * outbox created with it; relays already running use it from their next full scan (a minute).
 * Down moves its rows back into `outbox`, marked published.
 */
export const up = (knex: Knex) => createOutboxPublished(knex);
export const down = (knex: Knex) => dropOutboxPublished(knex);
