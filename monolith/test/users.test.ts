import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { signToken } from '@strangler/platform';
import { hashPassword, verifyPassword } from '../src/users/password.ts';
import { ISO, expectValidationProblems, outboxRows, oversizedBody, registerUser, setupMonolith, tokenFor } from './helpers.ts';

const m = await setupMonolith();
const { app } = m;

describe('POST /api/users (register)', () => {
  it('creates the user, answers 201 without the password hash, and stores a salted scrypt hash', async () => {
    const email = `Ada.${randomUUID()}@Example.com`;
    const res = await request(app).post('/api/users').send({ email, name: '  Ada Lovelace ', password: 'correct horse battery' });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ id: expect.any(String), email, name: 'Ada Lovelace', createdAt: expect.stringMatching(ISO), updatedAt: res.body.createdAt });
    expect(JSON.stringify(res.body)).not.toMatch(/scrypt|password/i);
    const row = await m.db.knex('users').where({ id: res.body.id }).first();
    expect(row.password_hash).toMatch(/^scrypt\$32768\$8\$1\$[\w-]{22}\$[\w-]{43}$/);
    expect(row.version).toBe(1);
  });

  it('refuses a second user with the same email in another case with 409 EMAIL_TAKEN and writes no event', async () => {
    const user = await registerUser(app);
    const before = (await outboxRows(m.db.knex)).length;
    const res = await request(app).post('/api/users').send({ email: user.email.toUpperCase(), name: 'Copy', password: 'another password' });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('EMAIL_TAKEN');
    expect((await outboxRows(m.db.knex)).length).toBe(before);
  });

  it('lists every invalid field at once', async () => {
    const res = await request(app).post('/api/users').send({ email: 'not-an-email', password: 'short', extra: true });
    expect(res.status).toBe(400);
    expectValidationProblems(res.body, ['email', 'name', 'password', '(body)']);
  });

  it('refuses the NUL character, which Postgres cannot store, as a field problem rather than a 500', async () => {
    const res = await request(app).post('/api/users').send({ email: `nul.${randomUUID()}@example.com`, name: 'Ada\u0000', password: 'correct horse battery' });
    expect(res.status).toBe(400);
    expect(res.body.error.details).toEqual([{ field: 'name', problem: 'must not contain the NUL character (\\u0000)' }]);
    const user = await registerUser(app);
    const notification = await request(app).post('/api/notifications').set(user.auth).send({ userId: user.id, channel: 'email', template: 'welcome', data: { a: ['x', 'y\u0000'] } });
    expect(notification.status).toBe(400);
    expect(notification.body.error.details).toEqual([{ field: 'data.a[1]', problem: 'must not contain the NUL character (\\u0000)' }]);
  });

  it('answers malformed JSON with 400 MALFORMED_JSON and an oversized body with 413', async () => {
    const malformed = await request(app).post('/api/users').set('content-type', 'application/json').send('{"email": ');
    expect(malformed.status).toBe(400);
    expect(malformed.body).toEqual({ error: { code: 'MALFORMED_JSON', message: expect.any(String) } });
    const big = await request(app).post('/api/users').set('content-type', 'application/json').send(oversizedBody());
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('PAYLOAD_TOO_LARGE');
  });
});

describe('POST /api/sessions (log in)', () => {
  it('returns a bearer token and the user for the right password, whatever the email case', async () => {
    const user = await registerUser(app);
    const res = await request(app).post('/api/sessions').send({ email: user.email.toUpperCase(), password: user.password });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ token: expect.stringMatching(/^[\w-]+\.[\w-]+\.[\w-]+$/), user: { id: user.id, email: user.email, name: user.name, createdAt: expect.stringMatching(ISO), updatedAt: expect.stringMatching(ISO) } });
    const me = await request(app).get(`/api/users/${user.id}`).set('Authorization', `Bearer ${res.body.token}`);
    expect(me.status).toBe(200);
  });

  it('answers a wrong password and an unknown email the same way: 401 INVALID_CREDENTIALS', async () => {
    const user = await registerUser(app);
    const wrong = await request(app).post('/api/sessions').send({ email: user.email, password: 'not the password' });
    const unknown = await request(app).post('/api/sessions').send({ email: `nobody-${randomUUID()}@example.com`, password: 'not the password' });
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    expect(wrong.body).toEqual(unknown.body);
    expect(wrong.body.error.code).toBe('INVALID_CREDENTIALS');
  });

  it('lists every missing field', async () => {
    const res = await request(app).post('/api/sessions').send({});
    expect(res.status).toBe(400);
    expectValidationProblems(res.body, ['email', 'password']);
  });
});

describe('GET /api/users/:id', () => {
  it('returns the caller themself', async () => {
    const user = await registerUser(app);
    const res = await request(app).get(`/api/users/${user.id}`).set(user.auth);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: user.id, email: user.email, name: user.name });
    expect(res.body).not.toHaveProperty('passwordHash');
    expect(res.body).not.toHaveProperty('version');
  });

  it("answers another user's id, an unknown id and a malformed id alike with 404 USER_NOT_FOUND", async () => {
    const [a, b] = [await registerUser(app), await registerUser(app)];
    for (const id of [b.id, randomUUID(), 'not-a-uuid']) {
      const res = await request(app).get(`/api/users/${id}`).set(a.auth);
      expect(res.status, id).toBe(404);
      expect(res.body.error.code).toBe('USER_NOT_FOUND');
    }
  });

  it('answers a missing, forged or expired token with 401 UNAUTHENTICATED', async () => {
    const user = await registerUser(app);
    const forged = signToken('some-other-secret-that-is-long-enough!', user.id, 3600);
    const expired = signToken('test-secret-of-at-least-thirty-two-characters', user.id, 60, Date.now() - 3_600_000);
    const tampered = user.token.replace(/\.([\w-]+)\./, (_m, body: string) => `.${body.slice(0, -2)}AA.`);
    for (const header of [undefined, `Bearer ${forged}`, `Bearer ${expired}`, `Bearer ${tampered}`, 'Basic abc', 'Bearer']) {
      const req = request(app).get(`/api/users/${user.id}`);
      const res = await (header ? req.set('Authorization', header) : req);
      expect(res.status, String(header)).toBe(401);
      expect(res.body.error.code).toBe('UNAUTHENTICATED');
    }
  });
});

describe('PATCH /api/users/:id', () => {
  it('changes name and email, bumps the version once per write and emits user.updated each time', async () => {
    const user = await registerUser(app);
    const email = `renamed-${randomUUID()}@example.com`;
    const first = await request(app).patch(`/api/users/${user.id}`).set(user.auth).send({ name: 'Ada King' });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ id: user.id, name: 'Ada King', email: user.email });
    const second = await request(app).patch(`/api/users/${user.id}`).set(user.auth).send({ email });
    expect(second.body).toMatchObject({ name: 'Ada King', email });
    expect(Date.parse(second.body.updatedAt)).toBeGreaterThanOrEqual(Date.parse(second.body.createdAt));
    const events = await outboxRows(m.db.knex, { aggregate_id: user.id });
    expect(events.map((e) => [e.event_type, e.aggregate_version])).toEqual([['user.registered', 1], ['user.updated', 2], ['user.updated', 3]]);
    expect(events[2]!.payload).toMatchObject({ id: user.id, name: 'Ada King', email, version: 3, passwordHash: expect.stringMatching(/^scrypt\$/) });
    const login = await request(app).post('/api/sessions').send({ email, password: user.password });
    expect(login.status).toBe(201);
  });

  it('treats a change to the current values as no write: same version, no event', async () => {
    const user = await registerUser(app);
    const res = await request(app).patch(`/api/users/${user.id}`).set(user.auth).send({ name: user.name, email: user.email });
    expect(res.status).toBe(200);
    expect((await m.db.knex('users').where({ id: user.id }).first()).version).toBe(1);
    expect(await outboxRows(m.db.knex, { aggregate_id: user.id })).toHaveLength(1);
  });

  it("refuses another user's email with 409 EMAIL_TAKEN", async () => {
    const [a, b] = [await registerUser(app), await registerUser(app)];
    const res = await request(app).patch(`/api/users/${a.id}`).set(a.auth).send({ email: b.email.toUpperCase() });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('EMAIL_TAKEN');
  });

  it('lists every problem, and refuses an empty change', async () => {
    const user = await registerUser(app);
    const bad = await request(app).patch(`/api/users/${user.id}`).set(user.auth).send({ name: '', email: 'nope', password: 'x' });
    expect(bad.status).toBe(400);
    expectValidationProblems(bad.body, ['name', 'email', '(body)']);
    const empty = await request(app).patch(`/api/users/${user.id}`).set(user.auth).send({});
    expect(empty.status).toBe(400);
    expect(empty.body.error.details).toEqual([{ field: '(body)', problem: 'Send at least one of name, email.' }]);
  });

  it("answers a change to another user's record with 404 and leaves it untouched", async () => {
    const [a, b] = [await registerUser(app), await registerUser(app)];
    const res = await request(app).patch(`/api/users/${b.id}`).set(a.auth).send({ name: 'Mallory' });
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe('USER_NOT_FOUND');
    expect((await m.db.knex('users').where({ id: b.id }).first()).name).toBe(b.name);
    const ghost = await request(app).patch(`/api/users/${randomUUID()}`).set(tokenFor(randomUUID())).send({ name: 'Ghost' });
    expect(ghost.status).toBe(404);
  });
});

describe('password hashing', () => {
  it('salts every hash and verifies only the right password', async () => {
    const [h1, h2] = await Promise.all([hashPassword('secret-1'), hashPassword('secret-1')]);
    expect(h1).not.toBe(h2);
    expect(await verifyPassword('secret-1', h1)).toBe(true);
    expect(await verifyPassword('secret-2', h1)).toBe(false);
    expect(await verifyPassword('secret-1', 'plain-text')).toBe(false);
  });

  it('verifies hashes made with other stored parameters', async () => {
    const cheap = await hashPassword('secret-1', { N: 1024, r: 8, p: 1 });
    expect(cheap).toMatch(/^scrypt\$1024\$8\$1\$/);
    expect(await verifyPassword('secret-1', cheap)).toBe(true);
  });
});
