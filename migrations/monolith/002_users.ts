import type { Knex } from 'knex';

/**
 * Users. `version` is bumped by every write (DESIGN.md "Data ownership"). Timestamps are
 * timestamptz(3): millisecond precision, so the ISO strings the API returns round-trip exactly
 * and keyset cursors built from them are exact.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table users (
      id uuid primary key,
      email text not null check (length(email) between 3 and 254),
      name text not null check (length(name) between 1 and 200),
      password_hash text not null,
      version integer not null default 1 check (version >= 1),
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now()
    )`);
  await knex.raw('create unique index users_email_lower_idx on users (lower(email))');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table if exists users');
}
