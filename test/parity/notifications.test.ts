import request from 'supertest';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Express } from 'express';
import { signToken } from '@strangler/platform';
import { createTestDatabase } from '@strangler/platform/testing';
import { createApp as createMonolith } from '@strangler/monolith';
import { createApp as createService } from '@strangler/notification';
import { notification as extraction } from '../../scripts/src/extractions/notification.ts';
import { backfill } from '../../scripts/src/sync/index.ts';
import { notificationCorpus, type ParityCase } from './corpus/notifications.ts';
import { Normaliser, collectKnown } from './normalise.ts';

/**
 * Parity: the same requests against the monolith and the extracted notification service, from
 * the same starting data (written through the monolith, then backfilled into the service), must
 * get equal answers: status, content type, and body after normalisation.
 */
const SECRET = 'parity-secret-of-at-least-thirty-two-chars';
const monolithDb = await createTestDatabase('monolith');
const serviceDb = await createTestDatabase('notification');
const monolith = createMonolith({ db: monolithDb.knex, auth: { secret: SECRET, ttlSeconds: 3600 } });
const service = createService({ db: serviceDb.knex, authSecret: SECRET });

interface Side {
  name: string;
  app: Express;
  normaliser: Normaliser;
  lastCursor?: string;
  lastResponse?: { status: number; contentType: string | undefined; body: unknown };
}
let sides: Side[];
const users: Record<string, { id: string; token: string; notifications: string[] }> = {};

async function register(name: string) {
  const email = `${name}@example.com`;
  const password = 'correct horse battery';
  const created = await request(monolith.app).post('/api/users').send({ email, name, password });
  expect(created.status).toBe(201);
  const session = await request(monolith.app).post('/api/sessions').send({ email, password });
  users[name] = { id: created.body.id, token: session.body.token, notifications: [] };
}

beforeAll(async () => {
  await register('alice');
  await register('bob');
  for (const [who, n] of [['alice', 3], ['bob', 1]] as const) {
    for (let i = 0; i < n; i++) {
      const res = await request(monolith.app)
        .post('/api/notifications')
        .set('authorization', `Bearer ${users[who]!.token}`)
        .send({ userId: users[who]!.id, channel: i % 2 ? 'sms' : 'email', template: `seed.t${i}`, data: { i, who } });
      expect(res.status).toBe(202);
    }
  }
  // Deliver the oldest of alice's so the starting data holds queued and sent notifications.
  const oldest = await monolithDb.knex('notifications').where({ user_id: users.alice!.id }).orderBy('created_at').first();
  await monolithDb.knex('notification_dispatch').whereNot({ notification_id: oldest.id }).update({ next_attempt_at: new Date(Date.now() + 3_600_000) });
  await monolith.dispatcher.drain();
  for (const u of Object.values(users)) {
    u.notifications = (await monolithDb.knex('notifications').where({ user_id: u.id }).orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }])).map((r) => r.id);
  }
  for (const spec of extraction.specs) await backfill(monolithDb.knex, serviceDb.knex, spec);

  const known = collectKnown([await monolithDb.knex('users').select('id', 'created_at', 'updated_at'), await monolithDb.knex('notifications')]);
  sides = [
    { name: 'monolith', app: monolith.app, normaliser: new Normaliser(known) },
    { name: 'notification', app: service, normaliser: new Normaliser(known) },
  ];
});

function tokenFor(who: ParityCase['as']): string | undefined {
  switch (who) {
    case undefined:
      return undefined;
    case 'forged':
      return signToken('x'.repeat(40), users.alice!.id, 3600);
    case 'stranger':
      return signToken(SECRET, '11111111-1111-4111-8111-111111111111', 3600);
    case 'expired':
      return signToken(SECRET, users.alice!.id, 60, Date.now() - 3_600_000);
    default:
      return users[who]!.token;
  }
}

function resolve(template: string, side: Side): string {
  return template.replace(/\{(cursor|new:\d+|[a-z]+(?:\.n\d+)?)\}/g, (_, ref: string) => {
    if (ref === 'cursor') return side.lastCursor ?? '';
    const fresh = /^new:(\d+)$/.exec(ref);
    if (fresh) return side.normaliser.idFor(`<new-id-${fresh[1]}>`) ?? `missing-new-id-${fresh[1]}`;
    const [who, which] = ref.split('.');
    const user = users[who!];
    if (!user) throw new Error(`Unknown placeholder {${ref}} in the parity corpus.`);
    return which ? user.notifications[Number(which.slice(1))]! : user.id;
  });
}

function resolveBody(body: unknown, side: Side): unknown {
  return body === undefined ? undefined : JSON.parse(resolve(JSON.stringify(body), side));
}

async function run(c: ParityCase, side: Side) {
  let req = request(side.app)[c.method.toLowerCase() as 'get'](resolve(c.path, side));
  const token = tokenFor(c.as);
  if (token) req = req.set('authorization', `Bearer ${token}`);
  for (const [k, v] of Object.entries(c.headers ?? {})) req = req.set(k, v);
  const res = c.raw ? await req.set('content-type', c.raw.contentType).send(c.raw.text) : c.body !== undefined ? await req.send(resolveBody(c.body, side) as object) : await req;
  if (typeof res.body?.nextCursor === 'string') side.lastCursor = res.body.nextCursor;
  return { status: res.status, contentType: res.headers['content-type'], body: side.normaliser.value(res.body) };
}

describe('parity: notification endpoints, monolith vs notification service', () => {
  for (const c of notificationCorpus) {
    it(c.name, async () => {
      const [a, b] = [await run(c, sides[0]!), await run(c, sides[1]!)];
      expect(b, `${c.method} ${c.path}: the service answered differently from the monolith`).toEqual(a);
    });
  }
});
