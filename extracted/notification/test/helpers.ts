import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { expect } from 'vitest';
import { signToken } from '@strangler/platform';

export const TEST_SECRET = 'test-secret-of-at-least-thirty-two-characters';

export interface TestUser {
  id: string;
  auth: { Authorization: string };
}

/** A caller with a valid token (the monolith issues tokens; the service only verifies them). */
export function testUser(id: string = randomUUID()): TestUser {
  return { id, auth: { Authorization: `Bearer ${signToken(TEST_SECRET, id, 3600)}` } };
}

export const notificationBody = (user: TestUser, extra: Record<string, unknown> = {}) => ({
  userId: user.id,
  channel: 'sms',
  template: 'welcome',
  data: { firstName: 'Ada', code: 42 },
  ...extra,
});

/** A JSON body just over the default 100kb limit. */
export const oversizedBody = () => JSON.stringify({ padding: 'x'.repeat(110 * 1024) });

export interface OutboxRow {
  aggregate_type: string;
  aggregate_id: string;
  aggregate_version: number;
  event_type: string;
  payload: Record<string, unknown> & { version: number };
  headers: Record<string, string>;
}

export function outboxRows(knex: Knex, where: Partial<OutboxRow> = {}): Promise<OutboxRow[]> {
  return knex<OutboxRow>('outbox').where(where).orderBy('seq').select('aggregate_type', 'aggregate_id', 'aggregate_version', 'event_type', 'payload', 'headers');
}

export const count = async (knex: Knex, table: string, where: Record<string, unknown> = {}) => Number((await knex(table).where(where).count<{ n: number }[]>({ n: '*' }))[0]!.n);

export const expectValidationProblems = (body: { error: { code: string; details: Array<{ field: string }> } }, fields: string[]) => {
  expect(body.error.code).toBe('VALIDATION_FAILED');
  expect(new Set(body.error.details.map((d) => d.field))).toEqual(new Set(fields));
};

/** Polls `check` every 50 ms until it returns a truthy value; fails after `timeoutMs` saying `what`. */
export async function waitFor<T>(what: string, check: () => Promise<T> | T, timeoutMs = 15_000): Promise<Exclude<T, null | undefined | false | 0 | ''>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as Exclude<T, null | undefined | false | 0 | ''>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const within = <T>(promise: Promise<T>, ms: number, what: string) => {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
    }),
  ]);
};

export const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
