import type { Knex } from 'knex';

/** A user as the projection keeps it (the user events' payload minus what this service must not hold). */
export interface UserState {
  id: string;
  email: string;
  name: string;
  version: number;
  createdAt: string;
  updatedAt: string;
}

export async function userVersion(trx: Knex.Transaction, id: string): Promise<number | null> {
  const row = await trx('users').where({ id }).first<{ version: number } | undefined>('version');
  return row ? row.version : null;
}

export async function applyUserState(trx: Knex.Transaction, u: UserState): Promise<void> {
  await trx.raw(
    `insert into users (id, email, name, version, created_at, updated_at) values (?, ?, ?, ?, ?, ?)
     on conflict (id) do update set email = excluded.email, name = excluded.name, version = excluded.version,
       created_at = excluded.created_at, updated_at = excluded.updated_at
     where users.version < excluded.version`,
    [u.id, u.email, u.name, u.version, u.createdAt, u.updatedAt],
  );
}
