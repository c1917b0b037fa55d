import { randomUUID } from 'node:crypto';
import request from 'supertest';
import type { Express } from 'express';
import type { Knex } from 'knex';
import { expect } from 'vitest';
import { signToken } from '@strangler/platform';
import { createTestDatabase, type TestDatabase } from '@strangler/platform/testing';
import { createApp, type AppDeps, type Monolith } from '../src/app.ts';

export const TEST_SECRET = 'test-secret-of-at-least-thirty-two-characters';
export const TEST_AUTH = { secret: TEST_SECRET, ttlSeconds: 3600 };

export interface TestMonolith extends Monolith {
  db: TestDatabase;
  /** Another app on the same database with some dependencies replaced. */
  variant(deps: Omit<Partial<AppDeps>, 'db'>): Monolith;
}

/** A fresh database for the file and the monolith on it. */
export async function setupMonolith(deps: Omit<Partial<AppDeps>, 'db'> = {}): Promise<TestMonolith> {
  const db = await createTestDatabase('monolith');
  const build = (extra: Omit<Partial<AppDeps>, 'db'>) => createApp({ auth: TEST_AUTH, ...deps, ...extra, db: db.knex });
  return { ...build({}), db, variant: build };
}

export interface TestUser {
  id: string;
  email: string;
  name: string;
  password: string;
  token: string;
  auth: { Authorization: string };
}

export async function registerUser(app: Express, overrides: Partial<{ email: string; name: string; password: string }> = {}): Promise<TestUser> {
  const body = { email: `user-${randomUUID()}@example.com`, name: 'Ada Lovelace', password: 'correct horse battery', ...overrides };
  const registered = await request(app).post('/api/users').send(body);
  expect(registered.status).toBe(201);
  const session = await request(app).post('/api/sessions').send({ email: body.email, password: body.password });
  expect(session.status).toBe(201);
  const token = session.body.token as string;
  return { id: registered.body.id, email: body.email, name: body.name, password: body.password, token, auth: { Authorization: `Bearer ${token}` } };
}

/** A token for a user id that was never registered (valid signature). */
export const tokenFor = (userId: string) => ({ Authorization: `Bearer ${signToken(TEST_SECRET, userId, 3600)}` });

export const orderBody = (token = 'tok_visa', items = [{ sku: 'BOOK-1', quantity: 2, unitPriceCents: 1_250 }]) => ({ items, currency: 'EUR', paymentMethod: { token } });

export async function placeOrder(app: Express, user: TestUser, body: object = orderBody(), headers: Record<string, string> = {}) {
  return request(app).post('/api/orders').set(user.auth).set(headers).send(body);
}

/** A JSON body just over the default 100kb limit. */
export const oversizedBody = () => JSON.stringify({ padding: 'x'.repeat(110 * 1024) });

export interface OutboxRow {
  aggregate_type: string;
  aggregate_id: string;
  aggregate_version: number;
  event_type: string;
  payload: Record<string, unknown> & { version: number };
}

export function outboxRows(knex: Knex, where: Partial<OutboxRow> = {}): Promise<OutboxRow[]> {
  return knex<OutboxRow>('outbox').where(where).orderBy('seq').select('aggregate_type', 'aggregate_id', 'aggregate_version', 'event_type', 'payload');
}

export const expectValidationProblems = (body: { error: { code: string; details: Array<{ field: string }> } }, fields: string[]) => {
  expect(body.error.code).toBe('VALIDATION_FAILED');
  expect(new Set(body.error.details.map((d) => d.field))).toEqual(new Set(fields));
};

export const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
