import type { Knex } from 'knex';

/**
 * The users projection: what the service needs to address a notification, copied from the
 * monolith (backfill) and kept in step by `user.*` events under the version rule. The monolith
 * (later the user service) is the writer of record; nothing here writes a user otherwise.
 *
 * No unique index on email: uniqueness is the writer's rule, and events of different users
 * apply independently, so a projection briefly holds two users with one address while user A
 * takes the address user B gave up and B's event has not landed yet.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table users (
      id uuid primary key,
      email text not null,
      name text not null,
      version integer not null check (version >= 1),
      created_at timestamptz(3) not null,
      updated_at timestamptz(3) not null
    )`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table if exists users');
}
