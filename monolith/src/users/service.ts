import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { signToken } from '@strangler/platform';
import { recordEvent } from '../shared/events.ts';
import { userErrors } from './errors.ts';
import { dummyHash, hashPassword, verifyPassword } from './password.ts';
import { findUserByEmail, findUserById, insertUser, isEmailTaken, toUser, toUserState, updateUser, type User } from './repository.ts';
import type { RegisterInput, UpdateUserInput } from './schemas.ts';

export interface AuthSettings {
  /** HS256 secret shared with every service (AUTH_TOKEN_SECRET). */
  secret: string;
  /** Token lifetime in seconds (AUTH_TOKEN_TTL_SECONDS). */
  ttlSeconds: number;
}

export class UserService {
  constructor(
    private readonly db: Knex,
    private readonly auth: AuthSettings,
  ) {}

  async register(input: RegisterInput): Promise<User> {
    const passwordHash = await hashPassword(input.password);
    const now = new Date();
    try {
      return await this.db.transaction(async (trx) => {
        const row = await insertUser(trx, { id: randomUUID(), email: input.email, name: input.name, password_hash: passwordHash, created_at: now, updated_at: now });
        await recordEvent(trx, 'user', 'user.registered', toUserState(row));
        return toUser(row);
      });
    } catch (err) {
      if (isEmailTaken(err)) throw userErrors.EMAIL_TAKEN();
      throw err;
    }
  }

  async login(email: string, password: string): Promise<{ token: string; user: User }> {
    const row = await findUserByEmail(this.db, email);
    const ok = await verifyPassword(password, row?.password_hash ?? (await dummyHash()));
    if (!row || !ok) throw userErrors.INVALID_CREDENTIALS();
    return { token: signToken(this.auth.secret, row.id, this.auth.ttlSeconds), user: toUser(row) };
  }

  /** Another user's id answers USER_NOT_FOUND, exactly like an unknown one (no existence leak). */
  async get(callerId: string, id: string): Promise<User> {
    const row = callerId === id ? await findUserById(this.db, id) : undefined;
    if (!row) throw userErrors.USER_NOT_FOUND();
    return toUser(row);
  }

  /** A change that leaves every field as it was is not a write: no version bump, no event. */
  async update(callerId: string, id: string, input: UpdateUserInput): Promise<User> {
    if (callerId !== id) throw userErrors.USER_NOT_FOUND();
    try {
      return await this.db.transaction(async (trx) => {
        const current = await findUserById(trx, id, { forUpdate: true });
        if (!current) throw userErrors.USER_NOT_FOUND();
        const changes: { name?: string; email?: string } = {};
        if (input.name !== undefined && input.name !== current.name) changes.name = input.name;
        if (input.email !== undefined && input.email !== current.email) changes.email = input.email;
        if (!Object.keys(changes).length) return toUser(current);
        const row = await updateUser(trx, id, changes, new Date());
        await recordEvent(trx, 'user', 'user.updated', toUserState(row));
        return toUser(row);
      });
    } catch (err) {
      if (isEmailTaken(err)) throw userErrors.EMAIL_TAKEN();
      throw err;
    }
  }
}
