import type { Knex } from 'knex';
import { createOutboxSchema, dropOutboxSchema } from '@strangler/outbox';

export const up = (knex: Knex) => createOutboxSchema(knex);
export const down = (knex: Knex) => dropOutboxSchema(knex);
