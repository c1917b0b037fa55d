import type { Knex } from 'knex';

/**
 * Idempotency keys (the `Idempotency-Key` header), scoped per user. The row is inserted first
 * in the business transaction (a concurrent request with the same key waits on the primary
 * key until this one commits or rolls back) and completed with the response before commit, so
 * a committed key always has its response and a rolled-back request leaves no key behind.
 * `response_body` is `json`, not `jsonb`, so a replay returns the same bytes (jsonb reorders
 * keys).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table idempotency_keys (
      user_id uuid not null,
      key text not null,
      request_hash text not null,
      response_status integer,
      response_body json,
      created_at timestamptz(3) not null default now(),
      primary key (user_id, key)
    )`);
  await knex.raw('create index idempotency_keys_created_idx on idempotency_keys (created_at)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table if exists idempotency_keys');
}
