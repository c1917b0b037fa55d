import type { Knex } from 'knex';
import { iso } from '../shared/json.ts';

export interface UserRow {
  id: string;
  email: string;
  name: string;
  password_hash: string;
  version: number;
  created_at: Date;
  updated_at: Date;
}

/** The user as the HTTP API shows it: never the password hash, never the version. */
export interface User {
  id: string;
  email: string;
  name: string;
  createdAt: string;
  updatedAt: string;
}

/** The user's full stored state, as carried by its events (the other side needs the hash to log users in). */
export interface UserState extends User {
  passwordHash: string;
  version: number;
}

export const toUser = (r: UserRow): User => ({ id: r.id, email: r.email, name: r.name, createdAt: iso(r.created_at), updatedAt: iso(r.updated_at) });
export const toUserState = (r: UserRow): UserState => ({ ...toUser(r), passwordHash: r.password_hash, version: r.version });

export const isEmailTaken = (err: unknown) =>
  (err as { code?: string; constraint?: string }).code === '23505' && (err as { constraint?: string }).constraint === 'users_email_lower_idx';

export function insertUser(trx: Knex.Transaction, user: Omit<UserRow, 'version'>): Promise<UserRow> {
  return trx<UserRow>('users')
    .insert({ ...user, version: 1 })
    .returning('*')
    .then(([row]) => row!);
}

export async function findUserById(db: Knex, id: string, { forUpdate = false } = {}): Promise<UserRow | undefined> {
  const q = db<UserRow>('users').where({ id }).first();
  return forUpdate ? q.forUpdate() : q;
}

export function findUserByEmail(db: Knex, email: string): Promise<UserRow | undefined> {
  return db<UserRow>('users').whereRaw('lower(email) = lower(?)', [email]).first();
}

/** Applies `changes` and bumps the version by one. */
export function updateUser(trx: Knex.Transaction, id: string, changes: Partial<Pick<UserRow, 'email' | 'name'>>, now: Date): Promise<UserRow> {
  return trx<UserRow>('users')
    .where({ id })
    .update({ ...changes, updated_at: now, version: trx.raw('version + 1') as unknown as number })
    .returning('*')
    .then(([row]) => row!);
}
