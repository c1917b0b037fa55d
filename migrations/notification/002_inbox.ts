import type { Knex } from 'knex';
import { createInboxSchema, dropInboxSchema } from '@strangler/outbox';

export const up = (knex: Knex) => createInboxSchema(knex);
export const down = (knex: Knex) => dropInboxSchema(knex);
