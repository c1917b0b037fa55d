import { randomBytes, randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import type { Knex } from 'knex';
import { createTestBroker, createTestDatabase, startServer } from '@strangler/platform/testing';
import { createRelay } from '@strangler/outbox';
import { createApp as createMonolith, FakeNotificationProvider, startMonolithSync } from '@strangler/monolith';
import { startNotificationService, UNDELIVERABLE_TEMPLATE } from '@strangler/notification';
import { createFacade, flipPatch, flipRoute, inCanary, listenFacade, type FlipArgs, type RouteView } from '@strangler/facade';
import { databases } from '../../scripts/src/databases.ts';
import { seed, SEED_PASSWORD } from '../../scripts/src/seed.ts';
import { notification as extraction } from '../../scripts/src/extractions/notification.ts';
import { backfill } from '../../scripts/src/sync/index.ts';
import { command as verifyCommand } from '../../scripts/src/commands/verify.ts';

/**
 * Issue 5, end to end: the notification service is extracted the way MIGRATION.md says, with
 * every real piece in this process (monolith, service, both relays, both consumers, facade with
 * its admin API) on this file's own databases and exchange, and clients talking only to the
 * facade. The routes go through shadow, canary 50% and serve under a concurrent workload, are
 * flipped back to the monolith mid-run, and then both sides must hold the same data (the
 * `strangler verify` command), every notification must have been delivered exactly once by its
 * writer of record, and shadowing must have found no mismatch beyond learned noise.
 */

const SECRET = 'e2e-secret-of-at-least-thirty-two-characters';
const ADMIN_TOKEN = randomBytes(16).toString('hex');
const ROUTES = ['notifications.send', 'notifications.get', 'notifications.list'] as const;
/** Bound of every wait for the event streams to settle. */
const SETTLE_MS = 20_000;

const monolithDb = await createTestDatabase('monolith');
const serviceDb = await createTestDatabase('notification');
const broker = await createTestBroker();
const SERVICE_QUEUE = `${broker.prefix}.notification`;
const SYNC_QUEUE = `${broker.prefix}.monolith-sync`;
// What the CLI code reads from the environment (databases(), the extraction's prepare(), the
// verify command): this file's databases, exchange and queue names. The file runs in its own process.
Object.assign(process.env, {
  MONOLITH_DB: monolithDb.name,
  NOTIFICATION_SVC_DB: serviceDb.name,
  AMQP_URL: broker.url,
  EVENTS_EXCHANGE: broker.exchange,
  NOTIFICATION_QUEUE: SERVICE_QUEUE,
});

// ---------------------------------------------------------------------------------------------
// HTTP client and workload (through the facade only)

interface Reply {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

async function call(base: string, method: string, url: string, o: { token?: string; body?: unknown } = {}): Promise<Reply> {
  const res = await fetch(base + url, {
    method,
    headers: { ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: o.body === undefined ? undefined : JSON.stringify(o.body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  return { status: res.status, body };
}

interface Actor {
  id: string;
  email: string;
  token: string;
  /** Notifications this user queued through POST /api/notifications (answered 202 by the side serving it). */
  sent: string[];
  orders: string[];
}

type Phase = 'shadow' | 'canary' | 'serve' | 'rollback' | 'after';

interface SentNotification {
  owner: Actor;
  channel: string;
  template: string;
  data: Record<string, unknown>;
  phase: Phase;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)]!;

/**
 * Client behaviour with its expectations: every answer is checked against the statuses the
 * contract allows for that request, and anything else is collected (and fails the test at the
 * end with the request, status and body).
 */
class Workload {
  phase: Phase = 'shadow';
  readonly actors: Actor[] = [];
  readonly sent = new Map<string, SentNotification>();
  readonly unexpected: string[] = [];
  readonly statuses = new Map<string, number>();
  /** Reads of a just-created notification that the answering side did not have yet (retried). */
  lagged = 0;
  private n = 0;
  private registered = 0;

  constructor(
    private readonly base: string,
    private readonly maxRegistrations: number,
  ) {}

  private check(op: string, reply: Reply, allowed: number[]): boolean {
    const key = `${this.phase} ${op} ${reply.status}`;
    this.statuses.set(key, (this.statuses.get(key) ?? 0) + 1);
    if (allowed.includes(reply.status)) return true;
    this.unexpected.push(`[${this.phase}] ${op}: ${reply.status} ${JSON.stringify(reply.body).slice(0, 400)}`);
    return false;
  }

  async login(id: string, email: string, password: string): Promise<Actor> {
    const session = await call(this.base, 'POST', '/api/sessions', { body: { email, password } });
    if (!this.check('log in', session, [201])) throw new Error(`could not log in ${email}: ${session.status}`);
    const actor: Actor = { id, email, token: session.body.token, sent: [], orders: [] };
    this.actors.push(actor);
    return actor;
  }

  async register(): Promise<Actor | null> {
    if (this.registered >= this.maxRegistrations) return null;
    this.registered++;
    const email = `e2e-${randomUUID()}@example.com`;
    const password = 'correct horse battery';
    const created = await call(this.base, 'POST', '/api/users', { body: { email, name: `E2E ${this.registered}`, password } });
    if (!this.check('register', created, [201])) return null;
    return this.login(created.body.id, email, password);
  }

  async send(a: Actor): Promise<string | null> {
    const n = ++this.n;
    const channel = pick(['email', 'sms', 'push']);
    // One in fifteen is rejected by both fake providers: it must end `failed` on both sides.
    const template = n % 15 === 0 ? UNDELIVERABLE_TEMPLATE : pick(['welcome', 'password.reset', 'promo_spring']);
    const data = { n, zeta: 'last', nested: { b: [1, 2], a: 'é' }, flag: n % 2 === 0 };
    const reply = await call(this.base, 'POST', '/api/notifications', { token: a.token, body: { userId: a.id, channel, template, data } });
    if (!this.check('send', reply, [202])) return null;
    const id = reply.body.id as string;
    a.sent.push(id);
    this.sent.set(id, { owner: a, channel, template, data, phase: this.phase });
    return id;
  }

  async sendInvalid(a: Actor): Promise<void> {
    await this.check('send invalid', await call(this.base, 'POST', '/api/notifications', { token: a.token, body: { userId: a.id, channel: 'fax', template: 'Bad Template', data: [], extra: 1 } }), [400]);
  }

  async sendForbidden(a: Actor): Promise<void> {
    const other = pick(this.actors.filter((x) => x !== a));
    await this.check('send for another user', await call(this.base, 'POST', '/api/notifications', { token: a.token, body: { userId: other.id, channel: 'sms', template: 'welcome', data: {} } }), [403]);
  }

  /** Places an order: the monolith queues an order notification in the same transaction. */
  async order(a: Actor): Promise<void> {
    const declined = Math.random() < 0.2;
    const reply = await call(this.base, 'POST', '/api/orders', {
      token: a.token,
      body: { items: [{ sku: `SKU-${1 + Math.floor(Math.random() * 50)}`, quantity: 1 + Math.floor(Math.random() * 3), unitPriceCents: 999 }], currency: 'EUR', paymentMethod: { token: declined ? 'tok_declined' : 'tok_visa' } },
    });
    if (this.check(declined ? 'order (declined)' : 'order', reply, [declined ? 402 : 201]) && !declined) a.orders.push(reply.body.id);
  }

  /** Cancels an order: a refund and another notification. */
  async cancel(a: Actor): Promise<void> {
    const id = a.orders.shift();
    if (id) await this.check('cancel order', await call(this.base, 'POST', `/api/orders/${id}/cancel`, { token: a.token }), [200]);
  }

  /**
   * Reads one of the caller's notifications. Outside the shadow phase the read may reach the
   * other side than the write did (canary cohorts are per route; a flip moves the route), so a
   * 404 is retried for up to 5 s: the other side must have it by then.
   */
  async get(a: Actor, id = a.sent.length ? pick(a.sent) : undefined): Promise<void> {
    if (!id) {
      await this.list(a);
      return;
    }
    const deadline = Date.now() + 5_000;
    for (let attempt = 0; ; attempt++) {
      const reply = await call(this.base, 'GET', `/api/notifications/${id}`, { token: a.token });
      if (reply.status === 404 && this.phase !== 'shadow' && Date.now() < deadline) {
        if (attempt === 0) this.lagged++;
        await sleep(50);
        continue;
      }
      if (this.check('get', reply, [200]) && (reply.body.id !== id || reply.body.userId !== a.id)) this.unexpected.push(`[${this.phase}] get ${id}: answered ${JSON.stringify(reply.body)}`);
      return;
    }
  }

  async getMissing(a: Actor): Promise<void> {
    await this.check('get unknown', await call(this.base, 'GET', `/api/notifications/${randomUUID()}`, { token: a.token }), [404]);
  }

  /** Lists the caller's notifications, and the next page when there is one; returns the ids seen. */
  async list(a: Actor, limit = 2 + Math.floor(Math.random() * 4)): Promise<string[]> {
    const first = await call(this.base, 'GET', `/api/notifications?limit=${limit}`, { token: a.token });
    if (!this.check('list', first, [200])) return [];
    const ids = (first.body.items as Array<{ id: string; userId: string }>).map((n) => n.id);
    if (first.body.nextCursor) {
      const next = await call(this.base, 'GET', `/api/notifications?limit=${limit}&cursor=${encodeURIComponent(first.body.nextCursor)}`, { token: a.token });
      if (this.check('list next page', next, [200])) ids.push(...(next.body.items as Array<{ id: string }>).map((n) => n.id));
    }
    return ids;
  }

  /** Every notification route at least once for `a` (so each canary cohort sees traffic on each route). */
  async sweep(a: Actor): Promise<void> {
    const id = await this.send(a);
    if (id) await this.get(a, id);
    await this.list(a);
  }

  /** One random client action, weighted like a busy afternoon. */
  async randomOp(): Promise<void> {
    const a = pick(this.actors);
    const r = Math.random();
    if (r < 0.05) await this.register();
    else if (r < 0.25) await this.send(a);
    else if (r < 0.29) await this.sendInvalid(a);
    else if (r < 0.31) await this.sendForbidden(a);
    else if (r < 0.43) await this.order(a);
    else if (r < 0.47) await this.cancel(a);
    else if (r < 0.67) await this.get(a);
    else if (r < 0.7) await this.getMissing(a);
    else await this.list(a);
  }

  /** `workers` loops of random actions, each pausing 10-40 ms between actions, until `stop` is set. */
  run(workers: number, stop: { now: boolean }): Promise<void> {
    const loop = async () => {
      while (!stop.now) {
        await this.randomOp();
        await sleep(10 + Math.random() * 30);
      }
    };
    return Promise.all(Array.from({ length: workers }, loop)).then(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Facade observation (admin API and its /metrics)

interface AdminView {
  url: string;
}

async function admin<T>(a: AdminView, pathname: string): Promise<T> {
  const res = await fetch(`${a.url}${pathname}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, signal: AbortSignal.timeout(5_000) });
  expect(res.status, `admin ${pathname}`).toBe(200);
  return (await res.json()) as T;
}

type Counts = Map<string, number>;

/** `metric{labels}` counters from the admin /metrics, summed by the labels named in `by`. */
async function scrape(a: AdminView, metric: string, by: string[]): Promise<Counts> {
  const text = await (await fetch(`${a.url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const out: Counts = new Map();
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${metric}\\{([^}]*)\\} (\\S+)$`).exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    const key = by.map((b) => labels[b] ?? '').join(' ');
    out.set(key, (out.get(key) ?? 0) + Number(m[2]));
  }
  return out;
}

const requestsBySide = (a: AdminView) => scrape(a, 'strangler_facade_requests_total', ['route', 'upstream', 'side']);
const delta = (after: Counts, before: Counts, key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);

// ---------------------------------------------------------------------------------------------
// Settling: no work left anywhere

/**
 * True when nothing is in flight in either direction: every event either side's outbox holds
 * for the other side is in the other side's inbox (so published and applied, or acknowledged),
 * and neither dispatcher has a delivery left to make. Each of those commits together with its
 * effect, so once it holds (and no client writes) it keeps holding.
 */
async function pending(): Promise<string[]> {
  const problems: string[] = [];
  const unapplied = async (from: Knex, to: Knex, consumer: string, types: string[]) => {
    const ids = (await from('outbox').whereIn('aggregate_type', types).pluck('id')) as string[];
    if (!ids.length) return 0;
    const seen = Number((await to('inbox').where({ consumer }).whereIn('message_id', ids).count<{ n: number }[]>({ n: '*' }))[0]!.n);
    return ids.length - seen;
  };
  // The dispatch tables first: a delivery deletes its dispatch row in the transaction that appends
  // its event, so once the row is gone the outbox read below sees the event. The other order can
  // miss a delivery that commits between the two reads.
  const dispatch = async (k: Knex) => Number((await k('notification_dispatch').count<{ n: number }[]>({ n: '*' }))[0]!.n);
  const [monolithDue, serviceDue] = [await dispatch(monolithDb.knex), await dispatch(serviceDb.knex)];
  const toService = await unapplied(monolithDb.knex, serviceDb.knex, SERVICE_QUEUE, ['user', 'notification']);
  const toMonolith = await unapplied(serviceDb.knex, monolithDb.knex, SYNC_QUEUE, ['notification']);
  if (toService) problems.push(`${toService} monolith event(s) not yet consumed by the service`);
  if (toMonolith) problems.push(`${toMonolith} service event(s) not yet consumed by the monolith's sync consumer`);
  if (monolithDue) problems.push(`${monolithDue} delivery(ies) left to the monolith's dispatcher`);
  if (serviceDue) problems.push(`${serviceDue} delivery(ies) left to the service's dispatcher`);
  return problems;
}

/** Waits (at most `timeoutMs`) until nothing is pending; returns what was still pending at the deadline (empty: settled). */
async function settle(timeoutMs = SETTLE_MS): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = await pending();
    if (!left.length || Date.now() > deadline) return left;
    await sleep(100);
  }
}

/** `npm run strangler -- verify notification --json`, in-process: its exit code and report. */
async function runVerify(): Promise<{ code: number; report: { differences: number; reports: unknown[] } }> {
  const lines: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void lines.push(args.join(' ')));
  try {
    const code = await verifyCommand.run({ positionals: ['notification'], values: { json: true } });
    return { code, report: JSON.parse(lines.at(-1) ?? '{}') };
  } finally {
    spy.mockRestore();
  }
}

// ---------------------------------------------------------------------------------------------
// The stack, started the way the runbook orders it

// Set up at the file's top level: an `afterAll` registered inside `beforeAll` never runs
// (vitest 4), and every piece below registers its teardown where it is created.
const monolithProvider = new FakeNotificationProvider();
const parked: string[] = [];
const backfillWrites: string[] = [];
const dbs = databases();

// 1. Legacy data: a small volume of users, orders, payments and notifications (no events).
const seeded = await seed({ database: dbs.monolith, users: 30, orders: 90, progress: false });
expect(seeded).toMatchObject({ users: 30, orders: 90 });
const seededNotificationIds = new Set((await monolithDb.knex('notifications').pluck('id')) as string[]);
const seededUsers: Array<{ id: string; email: string }> = await monolithDb.knex('users').select('id', 'email').orderBy('id');

// 2. The monolith runs as in production: app, dispatcher, its outbox relay, and the sync
//    consumer that copies the service's writes back (flip-back safety; it binds its queue).
const monolith = createMonolith({
  db: monolithDb.newPool('monolith'),
  auth: { secret: SECRET, ttlSeconds: 3600 },
  notifications: { provider: monolithProvider, dispatcher: { pollIntervalMs: 100, maxAttempts: 2, retryBaseMs: 100 } },
});
const monolithServer = await startServer(monolith.app);
monolith.dispatcher.start();
afterAll(() => monolith.dispatcher.stop());

const sync = await startMonolithSync({
  db: monolithDb.newPool('monolith-sync'),
  amqpUrl: broker.url,
  exchange: broker.exchange,
  queue: SYNC_QUEUE,
  retry: { baseMs: 100, maxMs: 1_000, maxAttempts: 20 },
});
afterAll(() => sync.stop());
sync.events.on('consumer:message:parked', (e) => parked.push(`monolith-sync: ${JSON.stringify(e)}`));

// 3. Backfill exactly as `strangler backfill notification` does: bind the service's queue,
//    then copy from one snapshot per entity. The relay runs and clients keep writing during
//    the copy: those changes must reach the service through the queue, applied by version.
const monolithRelay = createRelay({ connection: monolithDb.connection, amqpUrl: broker.url, exchange: broker.exchange, pollIntervalMs: 100, applicationName: 'e2e-relay-monolith' });
await monolithRelay.start();
afterAll(() => monolithRelay.stop());

await extraction.prepare!(process.env);
const direct = new Workload(monolithServer.url, 1);
const renamed = seededUsers[seededUsers.length - 1]!;
for (const spec of extraction.specs) {
  let wrote = false;
  const result = await backfill(monolithDb.knex, serviceDb.knex, spec, {
    batchSize: 25,
    onProgress: async () => {
      if (wrote) return;
      wrote = true;
      if (spec.name === 'users') {
        // A user registered and a seeded one renamed after the snapshot was taken.
        const fresh = await direct.register();
        const seededActor = await direct.login(renamed.id, renamed.email, SEED_PASSWORD);
        const patched = await call(monolithServer.url, 'PATCH', `/api/users/${renamed.id}`, { token: seededActor.token, body: { name: 'Renamed During Backfill' } });
        expect(patched.status).toBe(200);
        backfillWrites.push(`user ${fresh?.id} registered`, `user ${renamed.id} renamed`);
      } else {
        // An order (its notification, then the dispatcher's `sent`) and a direct notification.
        const actor = direct.actors[0]!;
        await direct.order(actor);
        const id = await direct.send(actor);
        backfillWrites.push(`notification ${id} sent`);
      }
    },
  });
  expect(result.copied, `backfill of ${spec.name}`).toBeGreaterThan(0);
}
expect(direct.unexpected).toEqual([]);
expect(backfillWrites).toHaveLength(3);

// 4. After the backfill: the service (HTTP edge, gRPC, dispatcher, consumer of the monolith's
//    events) and the relay of its outbox.
const service = await startNotificationService({
  db: serviceDb.newPool('notification'),
  amqpUrl: broker.url,
  exchange: broker.exchange,
  queue: SERVICE_QUEUE,
  httpPort: 0,
  grpcPort: 0,
  authSecret: SECRET,
  dispatcher: { pollIntervalMs: 100, maxAttempts: 2, retryBaseMs: 100 },
  consumer: { retry: { baseMs: 100, maxMs: 1_000, maxAttempts: 20 } },
  shutdownGraceMs: 2_000,
});
afterAll(() => service.stop());
service.consumer!.consumer.events.on('consumer:message:parked', (e) => parked.push(`notification: ${JSON.stringify(e)}`));
const serviceRelay = createRelay({ connection: serviceDb.connection, amqpUrl: broker.url, exchange: broker.exchange, pollIntervalMs: 100, applicationName: 'e2e-relay-notification' });
await serviceRelay.start();
afterAll(() => serviceRelay.stop());

// 5. The facade with its admin API, on a route table in a temporary file (every route on the monolith).
const dir = await mkdtemp(path.join(os.tmpdir(), 'strangler-e2e-'));
afterAll(() => rm(dir, { recursive: true, force: true }));
const routesFile = path.join(dir, 'routes.yaml');
await writeFile(
  routesFile,
  [
    'upstreams:',
    `  monolith: { url: ${monolithServer.url} }`,
    `  notification: { url: ${service.httpUrl}, dryRun: true }`,
    'routes:',
    '  - id: notifications.send',
    '    match: { method: POST, path: /api/notifications }',
    '    effects: unsafe',
    '    serve: monolith',
    '  - id: notifications.get',
    '    match: { method: GET, path: /api/notifications/:id }',
    '    effects: read',
    '    serve: monolith',
    '  - id: notifications.list',
    '    match: { method: GET, path: /api/notifications }',
    '    effects: read',
    '    serve: monolith',
    'default: monolith',
    '',
  ].join('\n'),
);
const facade = await createFacade({ routesFile, adminToken: ADMIN_TOKEN });
const running = await listenFacade(facade, { port: 0, adminPort: 0 });
afterAll(() => running.close(2_000));
const facadeUrl = running.main.url;
const adminView: AdminView = { url: running.admin!.url };
const workload = new Workload(facadeUrl, 12);

/** A flip through the admin API with the code the `strangler flip` command runs (flipPatch, then flipRoute). */
async function flip(routeId: string, args: FlipArgs, why: string) {
  const patch = flipPatch(args);
  const result = await flipRoute({ routeId, patch, why, who: 'e2e-test', adminUrl: adminView.url, adminToken: ADMIN_TOKEN });
  expect(result.via).toBe('admin');
  return result;
}

/**
 * Seeded users chosen so that, for every route, at least two fall in the 50% canary cohort and
 * two outside it: both sides then get traffic on each route during the canary, deterministically.
 */
function cohortCovering(users: Array<{ id: string; email: string }>, size: number) {
  const need = new Map<string, number>(ROUTES.flatMap((r) => [[`${r} in`, 2], [`${r} out`, 2]]));
  const cohorts = (u: { id: string }) => ROUTES.map((r) => `${r} ${inCanary(r, u.id, 50) ? 'in' : 'out'}`);
  const chosen = users.filter((u) => {
    const keys = cohorts(u);
    if (!keys.some((k) => need.get(k)! > 0)) return false;
    for (const k of keys) need.set(k, need.get(k)! - 1);
    return true;
  });
  if ([...need.values()].some((v) => v > 0)) throw new Error(`the seeded users do not cover both canary cohorts of every route: ${JSON.stringify([...need])}`);
  return [...chosen, ...users.filter((u) => !chosen.includes(u))].slice(0, Math.max(size, chosen.length));
}

describe('extracting the notification service end to end', () => {
  it('moves the routes through shadow, canary 50% and serve under load, flips back mid-run, and loses nothing: verify finds 0 differences, shadowing 0 mismatches beyond learned noise', async () => {
    const w = workload;
    const timeline: string[] = [];
    const started = Date.now();
    const mark = (what: string) => timeline.push(`${((Date.now() - started) / 1000).toFixed(1)}s ${what}`);

    // The backfill's concurrent writes arrive through the queue once the service consumes it.
    expect(await settle(), 'events written during the backfill reach the service').toEqual([]);
    expect(await serviceDb.knex('users').where({ id: renamed.id }).first('name', 'version'), 'a rename committed after the snapshot, applied after the copy').toEqual({ name: 'Renamed During Backfill', version: 2 });
    mark('backfill hand-over settled');

    // Clients: seeded users log in through the facade; new users register through it.
    const readers = await Promise.all(cohortCovering(seededUsers, 8).map((u) => w.login(u.id, u.email, SEED_PASSWORD)));
    const writers = (await Promise.all([w.register(), w.register(), w.register()])).filter((a): a is Actor => a !== null);
    expect(writers).toHaveLength(3);

    // ---- Shadow: the monolith answers; the service gets a copy (the unsafe send as a dry run).
    // The monolith cannot run a dry run, so the facade cannot learn the send route's generated
    // fields by asking it twice: they are declared instead.
    w.phase = 'shadow';
    for (const id of ROUTES) {
      await flip(id, { shadow: 'notification', percent: '100', ...(id === 'notifications.send' ? { ignore: ['$.id,$.createdAt', '$.updatedAt'] } : {}) }, 'parity check before the canary');
    }
    mark('shadow on');
    const beforeShadow = await requestsBySide(adminView);
    // Readers read settled data while writers write (their own data is read once it settled).
    await Promise.all([
      ...readers.map(async (a) => {
        for (const id of await w.list(a, 3)) await w.get(a, id);
        await w.getMissing(a);
        await w.list(a, 10);
      }),
      ...writers.map(async (a) => {
        for (let i = 0; i < 3; i++) await w.send(a);
        await w.sendInvalid(a);
        await w.sendForbidden(a);
        await w.order(a);
        await w.order(a);
        await w.cancel(a);
      }),
    ]);
    expect(await settle(), 'the shadow phase writes settle').toEqual([]);
    await Promise.all(
      writers.map(async (a) => {
        for (const id of await w.list(a, 4)) await w.get(a, id);
        for (const id of a.sent) await w.get(a, id);
      }),
    );
    mark('shadow workload done');
    const shadowRoutes = (await admin<{ routes: RouteView[] }>(adminView, '/routes')).routes;
    const recorded = (await admin<{ mismatches: unknown[] }>(adminView, '/shadow/mismatches?limit=3')).mismatches;
    const afterShadow = await requestsBySide(adminView);
    for (const id of ROUTES) {
      const view = shadowRoutes.find((r) => r.id === id)!;
      expect(view.shadowStats, `${id} shadow stats`).not.toBeNull();
      expect(view.shadowStats!.compared, `${id}: shadow copies compared`).toBeGreaterThan(0);
      expect({ route: id, mismatches: view.shadowStats!.mismatches, errors: view.shadowStats!.errors }, `latest mismatches: ${JSON.stringify(recorded)}`).toEqual({ route: id, mismatches: 0, errors: 0 });
      expect(delta(afterShadow, beforeShadow, `${id} monolith serve`), `${id}: the monolith answered during the shadow`).toBeGreaterThan(0);
      expect(delta(afterShadow, beforeShadow, `${id} notification serve`) + delta(afterShadow, beforeShadow, `${id} notification canary`)).toBe(0);
    }
    expect(recorded).toEqual([]);

    // ---- Canary 50% (sticky by user), then serve, then back to the monolith mid-run, under a
    // continuous mixed workload.
    const stop = { now: false };
    w.phase = 'canary';
    for (const id of ROUTES) await flip(id, { canary: 'notification', percent: '50', offShadow: true }, 'canary: half of the users');
    mark('canary 50%');
    const atCanary = await requestsBySide(adminView);
    const load = w.run(4, stop);
    await Promise.all([...readers, ...writers].map((a) => w.sweep(a)));
    await sleep(1_500);

    w.phase = 'serve';
    for (const id of ROUTES) await flip(id, { serve: 'notification', offCanary: true }, 'cut over');
    mark('served by the service');
    const atServe = await requestsBySide(adminView);
    await Promise.all([...readers, ...writers].map((a) => w.sweep(a)));
    await sleep(1_500);

    w.phase = 'rollback';
    for (const id of ROUTES) await flip(id, { serve: 'monolith' }, 'rollback: flipped back mid-run');
    mark('flipped back to the monolith');
    const atRollback = await requestsBySide(adminView);
    await Promise.all([...readers, ...writers].map((a) => w.sweep(a)));
    await sleep(1_000);
    stop.now = true;
    await load;
    mark(`workload stopped (${w.sent.size} notifications sent, ${w.actors.length} users)`);
    const atEnd = await requestsBySide(adminView);

    for (const id of ROUTES) {
      expect(delta(atServe, atCanary, `${id} notification canary`), `${id}: the service answered its canary share`).toBeGreaterThan(0);
      expect(delta(atServe, atCanary, `${id} monolith serve`), `${id}: the monolith answered the rest during the canary`).toBeGreaterThan(0);
      expect(delta(atRollback, atServe, `${id} notification serve`), `${id}: the service served it after the cut-over`).toBeGreaterThan(0);
      expect(delta(atEnd, atRollback, `${id} monolith serve`), `${id}: the monolith served it again after the rollback`).toBeGreaterThan(0);
    }

    // ---- Settle, then verify: the same code as `npm run strangler -- verify notification`.
    w.phase = 'after';
    const left = await settle();
    mark(`settled${left.length ? ` (NOT: ${left.join('; ')})` : ''}`);
    const verified = await runVerify();
    mark('verified');
    const examples = (verified.report.reports as Array<{ spec: string; examples: unknown[] }>).flatMap((r) => r.examples.map((e) => ({ spec: r.spec, ...(e as object) })));
    expect({ differences: verified.report.differences, examples }, 'strangler verify notification').toEqual({ differences: 0, examples: [] });
    expect(verified.code).toBe(0);
    expect(w.unexpected, 'answers outside the contract').toEqual([]);
    expect(left, 'the event streams settle').toEqual([]);
    expect(parked, 'no event parked').toEqual([]);

    // Nothing echoes: a notification's events come from its writer of record only.
    const echoed = await serviceDb.knex('outbox').where({ aggregate_type: 'notification' }).whereIn('aggregate_id', (await monolithDb.knex('outbox').where({ aggregate_type: 'notification' }).distinct('aggregate_id').pluck('aggregate_id')) as string[]).count<{ n: number }[]>({ n: '*' });
    expect(Number(echoed[0]!.n), 'notifications with events from both sides').toBe(0);

    // Every notification a client queued, on whichever side, is readable through the facade now
    // the monolith serves again, with its content, and delivered (or failed) by then.
    const notFound: string[] = [];
    const wrong: string[] = [];
    const entries = [...w.sent.entries()];
    for (let i = 0; i < entries.length; i += 8) {
      await Promise.all(
        entries.slice(i, i + 8).map(async ([id, s]) => {
          const r = await call(facadeUrl, 'GET', `/api/notifications/${id}`, { token: s.owner.token });
          if (r.status !== 200) return void notFound.push(`${id} (${s.phase}): ${r.status}`);
          const status = s.template === UNDELIVERABLE_TEMPLATE ? 'failed' : 'sent';
          if (r.body.template !== s.template || r.body.channel !== s.channel || !isDeepStrictEqual(r.body.data, s.data) || r.body.status !== status) {
            wrong.push(`${id} (${s.phase}): ${JSON.stringify(r.body)}`);
          }
        }),
      );
    }
    expect(notFound, 'notifications lost after the flip back').toEqual([]);
    expect(wrong, 'notifications served with other content or state').toEqual([]);

    // Each notification was delivered exactly once, by exactly one side (its writer of record).
    const byMonolith = monolithProvider.allDeliveries().map((d) => d.notificationId);
    const byService = (await serviceDb.knex('provider_deliveries').where({ outcome: 'delivered' }).pluck('notification_id')) as string[];
    const shouldBeSent = ((await monolithDb.knex('notifications').where({ status: 'sent' }).pluck('id')) as string[]).filter((id) => !seededNotificationIds.has(id));
    expect(new Set(byMonolith).size, 'duplicate deliveries by the monolith').toBe(byMonolith.length);
    expect(new Set(byService).size, 'duplicate deliveries by the service').toBe(byService.length);
    expect(byMonolith.filter((id) => byService.includes(id)), 'delivered by both sides').toEqual([]);
    expect([...byMonolith, ...byService].sort(), 'deliveries vs notifications marked sent').toEqual(shouldBeSent.sort());
    const canaryOrLaterOnService = [...w.sent.entries()].filter(([id, s]) => s.phase !== 'shadow' && byService.includes(id)).length;
    expect(canaryOrLaterOnService, 'notifications the service was the writer of record for').toBeGreaterThan(0);

    // Shadowing, over the whole run: compared on every route, no mismatch beyond learned noise.
    const shadow = await scrape(adminView, 'strangler_facade_shadow_total', ['route', 'result']);
    for (const id of ROUTES) {
      expect(shadow.get(`${id} match`) ?? 0, `${id}: shadow matches`).toBeGreaterThan(0);
      expect(shadow.get(`${id} mismatch`) ?? 0, `${id}: shadow mismatches`).toBe(0);
      expect(shadow.get(`${id} error`) ?? 0, `${id}: shadow errors`).toBe(0);
    }
    expect((await admin<{ mismatches: unknown[] }>(adminView, '/shadow/mismatches')).mismatches).toEqual([]);
    const audit = await admin<{ entries: Array<{ routeId: string; source: string }> }>(adminView, '/audit?limit=100');
    expect(audit.entries.filter((e) => e.source === 'api')).toHaveLength(ROUTES.length * 4);
    const breakers = (await admin<{ routes: RouteView[] }>(adminView, '/routes')).routes.flatMap((r) => Object.entries(r.breakers).filter(([, state]) => state !== 'closed').map(([up, state]) => `${r.id}: ${up} ${state}`));
    expect(breakers, 'breakers not closed').toEqual([]);

    console.info(`e2e notification: ${timeline.join(' | ')}; ${w.lagged} read(s) waited for the other side; ${w.sent.size} notifications, ${byMonolith.length} delivered by the monolith, ${byService.length} by the service`);
  }, 90_000);
});
