import type { Knex } from 'knex';

/**
 * The inbox: one row per message a consumer has dealt with (applied, or acknowledged as a
 * duplicate), written in the same transaction as the effect. A redelivered message finds its
 * row and is acknowledged without a second effect. Several consumers may share a database,
 * hence the `consumer` column. Rows only need to outlive redeliveries (minutes); the version
 * rule guards against anything older, so each consumer deletes its rows after
 * `inboxRetentionMs` (7 days by default; consume.ts).
 */
export async function createInboxSchema(knex: Knex): Promise<void> {
  await knex.schema.createTable('inbox', (t) => {
    t.text('consumer').notNullable();
    t.text('message_id').notNullable();
    t.text('event_type');
    t.timestamp('processed_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['consumer', 'message_id']);
  });
  await knex.raw('create index inbox_processed_at_idx on inbox (processed_at)');
}

export async function dropInboxSchema(knex: Knex): Promise<void> {
  await knex.raw('drop table if exists inbox');
}
