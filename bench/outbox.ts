/**
 * `npm run bench:outbox`: the outbox pipeline end to end, commit to consumer-applied, on the
 * configured Postgres and RabbitMQ. Prints one JSON line:
 *
 *   {"eventsPerSec", "p50Ms", "p99Ms", "ceilingCommitsPerSec", ...details}
 *
 * - ceilingCommitsPerSec: plain commits/s of the same business + outbox inserts with no relay
 *   and no NOTIFY (`strangler.outbox_notify = off`), CLIENTS clients, into a database of its
 *   own with the same tables and trigger that no relay reads;
 * - eventsPerSec: events/s applied by the consumer (its own database, inbox, version rule)
 *   while the same CLIENTS clients commit as fast as they can with the relay running;
 * - ratio: eventsPerSec / ceilingCommitsPerSec. The two alternate in ROUNDS rounds (a ceiling
 *   phase, then a pipeline phase, then the backlog drains), and each figure is the median over
 *   the rounds, the ratio the median of each round's own ratio: on a shared machine whose speed
 *   drifts over a minute, a ceiling measured once at the start says little about the end;
 * - p50Ms / p99Ms: commit-to-applied latency at a steady 500 events/s (latencyRatePerSec; after
 *   1 s at that rate, not recorded, for the pipeline to settle after the throughput rounds).
 * - drain: the pipeline alone, BENCH_DRAIN_EVENTS events committed at once and drained with no
 *   producer running: events/s and, on Linux with the services on this host, CPU µs per event of
 *   the relay, the consumer, their Postgres backends and RabbitMQ. Steadier from run to run than
 *   the ratio: what to compare when changing the relay or the consumer.
 *
 * The relay runs as `npm run relay` would (a child process), the consumer in another child
 * process, the producers here: three processes sharing the machine's cores with Postgres and
 * RabbitMQ. Everything it creates (three databases, an exchange, queues) is removed at the end.
 * Bounded: about two minutes.
 *
 * Settings (environment): BENCH_CLIENTS (16; each opens two Postgres connections, and the run
 * refuses to start when max_connections leaves too few), BENCH_ROUNDS (5), BENCH_CEILING_SECONDS
 * (3), BENCH_THROUGHPUT_SECONDS (8), BENCH_LATENCY_SECONDS (30), BENCH_LATENCY_RATE (500 events/s:
 * the target's rate; others show how latency depends on load), BENCH_DRAIN_EVENTS (40000; 0 skips
 * the drain phase), BENCH_DEBUG=1 (where the time goes, on stderr), BENCH_PROFILE_DIR (CPU
 * profiles of the relay and the consumer).
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import {
  amqpEnv,
  connectAmqp,
  createDb,
  dropDatabase,
  ensureDatabase,
  loadConfig,
  pgConnection,
  pgEnv,
  repoRoot,
  withAdminClient,
  type Knex,
  type PgConnection,
} from '@strangler/platform';
// Internal to the consumer, not exported by the package; see placeOrder.
import { consumerTransaction } from '../outbox/src/consumer/pg-transaction.ts';
import { appendEvent, consume, consumerQueues, createInboxSchema, createOutboxSchema, retryDelays } from '@strangler/outbox';

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 16);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const CEILING_SECONDS = Number(process.env.BENCH_CEILING_SECONDS ?? 3);
// Per round; the first THROUGHPUT_WARMUP_SECONDS are not counted: the relay has gone idle while
// the previous round drained and the ceiling phase ran, and its batching takes ~1 s to rise.
const THROUGHPUT_SECONDS = Number(process.env.BENCH_THROUGHPUT_SECONDS ?? 8);
const THROUGHPUT_WARMUP_SECONDS = 3;
// 30 s, 15,000 events at 500/s: the p99 is then the 150th slowest, not the 50th. The slow events
// come in bursts (a process's GC or a descheduled backend stalls every event in flight for 10 to
// 40 ms), a few a second, so over 10 s the p99 said how many bursts happened to fall in the
// window: 10.3 to 15.6 ms between runs on one machine; over 40 s, 10.0 ms in two runs on another.
const LATENCY_SECONDS = Number(process.env.BENCH_LATENCY_SECONDS ?? 30);
const LATENCY_RATE = Number(process.env.BENCH_LATENCY_RATE ?? 500);
const LATENCY_SETTLE_SECONDS = 1;
// The last phase (see drainPhase in main): events committed at once and drained with no producer running.
const DRAIN_EVENTS = Number(process.env.BENCH_DRAIN_EVENTS ?? 40_000);

if (!(Number.isInteger(CLIENTS) && CLIENTS >= 1 && CLIENTS <= 1_000)) throw new Error(`BENCH_CLIENTS="${process.env.BENCH_CLIENTS}": give a whole number of producing clients from 1 to 1000.`);
if (!(Number.isInteger(ROUNDS) && ROUNDS >= 1)) throw new Error(`BENCH_ROUNDS="${process.env.BENCH_ROUNDS}": give a whole number of rounds, 1 or more.`);
if (!(THROUGHPUT_SECONDS >= THROUGHPUT_WARMUP_SECONDS + 1)) throw new Error(`BENCH_THROUGHPUT_SECONDS="${process.env.BENCH_THROUGHPUT_SECONDS}": give at least ${THROUGHPUT_WARMUP_SECONDS + 1} (the first ${THROUGHPUT_WARMUP_SECONDS} s of each round are warm-up).`);
if (!(Number.isInteger(LATENCY_RATE) && LATENCY_RATE >= 1 && LATENCY_RATE <= 5_000)) throw new Error(`BENCH_LATENCY_RATE="${process.env.BENCH_LATENCY_RATE}": give a whole number of events per second from 1 to 5000.`);
if (!(LATENCY_SECONDS * LATENCY_RATE >= 1)) throw new Error(`BENCH_LATENCY_SECONDS="${process.env.BENCH_LATENCY_SECONDS}": give a number of seconds above 0, long enough for one event at BENCH_LATENCY_RATE (${LATENCY_RATE}/s).`);
if (!(Number.isInteger(DRAIN_EVENTS) && DRAIN_EVENTS >= 0 && DRAIN_EVENTS <= 1_000_000)) throw new Error(`BENCH_DRAIN_EVENTS="${process.env.BENCH_DRAIN_EVENTS}": give a whole number of events from 0 (no drain phase) to 1000000.`);
if (!(CEILING_SECONDS > 0)) throw new Error(`BENCH_CEILING_SECONDS="${process.env.BENCH_CEILING_SECONDS}": give a number of seconds above 0.`);
const env = loadConfig({ ...pgEnv, ...amqpEnv });
const tag = process.env.BENCH_TAG ?? `bench_outbox_${process.pid}`;
const producerDb = tag;
const ceilingDb = `${tag}_ceiling`;
const consumerDb = `${tag}_svc`;
const exchange = `${tag}.events`;
const queue = `${tag}.orders`;
const now = () => performance.timeOrigin + performance.now();

// The consumer reports how many events it applied (and in how many transactions); the ids and
// times of each only while the latency phase records them. The throughput rounds need counts
// alone, and the bookkeeping of ~3,000 ids a second would take CPU from this process's producers.
type ToParent = { type: 'ready' } | { type: 'recording'; on: boolean } | { type: 'applied'; count: number; batches: number; ids: string[]; at: number[]; rx: number[] };
type ToChild = { type: 'record'; on: boolean };
const debug = !!process.env.BENCH_DEBUG;
// Postgres connections besides the producers' pools: the consumer's pool, and the relay's (its
// leader session, its listener and a pool of two for readiness, metrics and retention).
const CONSUMER_POOL = 6;
const RELAY_CONNECTIONS = 4;

if (process.argv[2] === '--consumer') await consumerProcess();
else await main();

async function consumerProcess() {
  const db = createDb(pgConnection(env, consumerDb), { applicationName: 'bench-consumer', pool: { max: CONSUMER_POOL } });
  const received = new Map<string, number>();
  let recording = false;
  const consumer = await consume({
    queue,
    bindings: ['order.*'],
    db,
    amqpUrl: env.AMQP_URL,
    exchange,
    // The batch forms: one statement for the versions and one for the effects of a whole batch.
    // Events carry the entity's full state, so of several events of one order in a batch the
    // last one's state is the result.
    handler: {
      async versionsOf(trx, events) {
        const { rows } = await trx.raw<{ rows: Array<{ id: string; version: number }> }>('select id, version from orders_replica where id = any(?::text[])', [events.map((e) => e.aggregateId)]);
        const versions = new Map(rows.map((r) => [r.id, r.version]));
        return events.map((e) => versions.get(e.aggregateId) ?? null);
      },
      async applyAll(trx, events) {
        if (debug && recording) for (const e of events) received.set(e.id, now());
        const last = new Map(events.map((e) => [e.aggregateId, e]));
        const rows = [...last.values()];
        await trx.raw(
          `insert into orders_replica (id, version, total_cents, items)
           select * from unnest(?::text[], ?::int[], ?::int[], ?::jsonb[])
           on conflict (id) do update set version = excluded.version, total_cents = excluded.total_cents, items = excluded.items`,
          [rows.map((e) => e.aggregateId), rows.map((e) => e.aggregateVersion), rows.map((e) => (e.payload as { totalCents: number }).totalCents), rows.map((e) => JSON.stringify((e.payload as { items: unknown }).items))],
        );
      },
    },
  });
  let count = 0;
  let batches = 0;
  let ids: string[] = [];
  let at: number[] = [];
  let rx: number[] = [];
  consumer.events.on('consumer:batch:committed', ({ applied }) => {
    if (!applied.length) return; // every message a duplicate
    count += applied.length;
    batches++;
    if (!recording) return;
    const t = now();
    for (const e of applied) {
      ids.push(e.id);
      at.push(t);
      if (debug) {
        rx.push(received.get(e.id) ?? t);
        received.delete(e.id);
      }
    }
  });
  const flush = setInterval(() => {
    if (!count) return;
    process.send!({ type: 'applied', count, batches, ids, at, rx } satisfies ToParent);
    count = 0;
    batches = 0;
    ids = [];
    at = [];
    rx = [];
  }, 50);
  process.on('message', (m: ToChild) => {
    if (m.type !== 'record') return;
    recording = m.on;
    process.send!({ type: 'recording', on: m.on } satisfies ToParent);
  });
  process.send!({ type: 'ready' } satisfies ToParent);
  process.once('SIGTERM', async () => {
    clearInterval(flush);
    await consumer.stop();
    await db.destroy();
    process.exit(0);
  });
}

/**
 * One business transaction: a new order and its `order.placed` event, the statements a
 * monolith's write sends. Run on a pooled connection with a BEGIN of its own and the COMMIT of
 * consumerTransaction (which the consumer uses for the same reason), not in knex.transaction():
 * knex builds a whole knex instance for every transaction, and at 500 commits/s the garbage made
 * this process scavenge every ~0.2 s for 4 to 6 ms, on both cores, stalling the relay, the broker
 * and the consumer with it (see README, "Measured here"). The database sees the same statements.
 */
async function placeOrder(knex: Knex, n: number): Promise<string> {
  return consumerTransaction(knex, async (trx, connection) => {
    await connection.query('begin');
    const id = `o-${process.pid}-${n}`;
    const items = [{ sku: 'SKU-1', quantity: 2, unitPriceCents: 1250 }];
    await trx('orders').insert({ id, version: 1, status: 'placed', total_cents: 2500, items: JSON.stringify(items) });
    const { id: eventId } = await appendEvent(trx, {
      aggregateType: 'order',
      aggregateId: id,
      aggregateVersion: 1,
      eventType: 'order.placed',
      payload: { id, status: 'placed', totalCents: 2500, currency: 'EUR', items },
      origin: 'bench',
    });
    return eventId;
  });
}

/**
 * CLIENTS loops committing as fast as they can for `seconds`; returns commits and their times.
 * `progress.commits` counts them as they happen.
 */
async function saturate(knex: Knex, seconds: number, counter: { n: number }, progress = { commits: 0 }): Promise<{ commits: number; start: number; end: number }> {
  const start = now();
  const end = start + seconds * 1_000;
  const before = progress.commits;
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (now() < end) {
        await placeOrder(knex, counter.n++);
        progress.commits++;
      }
    }),
  );
  return { commits: progress.commits - before, start, end: now() };
}

function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main() {
  const children: ChildProcess[] = [];
  const connection = pgConnection(env, producerDb);
  const pools: Knex[] = [];
  const pool = (database: string, max: number) => {
    const k = createDb(pgConnection(env, database), { applicationName: 'bench-producer', pool: { min: max, max } });
    pools.push(k);
    return k;
  };
  const deadline = setTimeout(() => {
    console.error('bench:outbox did not finish within 3 minutes; giving up');
    process.exitCode = 1;
    void cleanup().finally(() => process.exit(1));
  }, 180_000);

  async function cleanup() {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null ? Promise.race([once(c, 'exit'), sleep(10_000)]) : null)));
    await Promise.all(pools.splice(0).map((p) => p.destroy()));
    await dropDatabase(connection, producerDb, { force: true }).catch(() => {});
    await dropDatabase(connection, ceilingDb, { force: true }).catch(() => {});
    await dropDatabase(connection, consumerDb, { force: true }).catch(() => {});
    const conn = await connectAmqp(env.AMQP_URL, `${tag}-cleanup`).catch(() => null);
    if (conn) {
      const ch = await conn.createChannel();
      const q = consumerQueues(queue);
      for (const name of [q.events, q.dead, ...new Set(retryDelays().map((d) => q.delay(d)))]) await ch.deleteQueue(name).catch(() => {});
      await ch.deleteExchange(exchange).catch(() => {});
      await conn.close().catch(() => {});
    }
  }

  try {
    await checkConnections(connection);
    await ensureDatabase(connection, producerDb);
    await ensureDatabase(connection, ceilingDb);
    await ensureDatabase(connection, consumerDb);
    for (const database of [producerDb, ceilingDb]) {
      const k = createDb(pgConnection(env, database), { applicationName: 'bench-setup', pool: { max: 1 } });
      await createOutboxSchema(k);
      await k.raw(`create table orders (id text primary key, version int not null, status text not null, total_cents int not null, items jsonb not null, created_at timestamptz not null default now())`);
      await k.destroy();
    }
    {
      const c = createDb(pgConnection(env, consumerDb), { applicationName: 'bench-setup', pool: { max: 1 } });
      await createInboxSchema(c);
      await c.raw(`create table orders_replica (id text primary key, version int not null, total_cents int not null, items jsonb not null)`);
      await c.destroy();
    }
    const admin = createDb(connection, { applicationName: 'bench-admin', pool: { max: 1 } });
    pools.push(admin);
    const counter = { n: 0 };

    // The ceiling's database: no relay reads it, and its trigger never notifies (database
    // default, so every new session has it off).
    await admin.raw(`alter database "${ceilingDb}" set strangler.outbox_notify = 'off'`);
    const ceilingPool = pool(ceilingDb, CLIENTS);
    await ceilingPool.raw('select 1');
    const ceilingCounter = { n: 0 };
    await saturate(ceilingPool, 1, ceilingCounter); // warm-up, not recorded
    const ceilingWarmupCommits = ceilingCounter.n;
    // The ceiling's backends run nothing else.
    const ceilingPids = async (): Promise<number[]> =>
      (await admin.raw(`select pid from pg_stat_activity where datname = ? and application_name = 'bench-producer'`, [ceilingDb])).rows.map((row: { pid: number }) => row.pid);
    const ceilingPgCpuWarmup = debug ? cpuSeconds(await ceilingPids()) : 0;

    // 2. Relay and consumer up.
    const profile = process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : [];
    const relay = spawn(process.execPath, [...profile, '--import', 'tsx', 'outbox/src/relay-main.ts', '--db', producerDb], {
      cwd: repoRoot,
      env: { ...process.env, RELAY_EXCHANGE: exchange, RELAY_METRICS_PORT: '0', LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    children.push(relay);
    const consumerChild = fork(fileURLToPath(import.meta.url), ['--consumer'], {
      execArgv: [...profile, '--import', 'tsx'],
      env: { ...process.env, BENCH_TAG: tag },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    children.push(consumerChild);
    const applied = new Map<string, number>();
    const receivedAt = new Map<string, number>();
    let appliedTotal = 0;
    let appliedBatches = 0;
    let onRecording: () => void = () => {};
    const ready = new Promise<void>((resolve) =>
      consumerChild.on('message', (m: ToParent) => {
        if (m.type === 'ready') resolve();
        else if (m.type === 'recording') onRecording();
        else {
          appliedTotal += m.count;
          appliedBatches += m.batches;
          m.ids.forEach((id, i) => applied.set(id, m.at[i]!));
          if (debug) m.ids.forEach((id, i) => receivedAt.set(id, m.rx[i]!));
        }
      }),
    );
    await Promise.race([ready, sleep(30_000).then(() => Promise.reject(new Error('the consumer did not start within 30 s')))]);
    // The consumer reports each applied event's id and time only while it records (the latency phase).
    const setRecording = (on: boolean) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the consumer did not ${on ? 'start' : 'stop'} recording within 30 s`)), 30_000);
        onRecording = () => {
          clearTimeout(timer);
          resolve();
        };
        consumerChild.send({ type: 'record', on } satisfies ToChild);
      });
    const producers = pool(producerDb, CLIENTS);
    await producers.raw('select 1');
    // Warm up relay and consumer (connections, prepared statements, JIT).
    for (let i = 0; i < 50; i++) await placeOrder(producers, counter.n++);
    await waitUntil(() => appliedTotal >= 50, 20_000, 'the warm-up events to arrive');

    // Per-process CPU; Postgres backends by application_name (a backend absent before counts from 0).
    const accounts = async (before?: Map<string, number>) => {
      const { rows } = await admin.raw(`select application_name as app, pid from pg_stat_activity where datname in (?, ?)`, [producerDb, consumerDb]);
      let beam: number[] = [];
      try {
        beam = execFileSync('pgrep', ['-f', 'beam.smp']).toString().trim().split('\n').map(Number);
      } catch {
        // no broker process visible
      }
      const groups: Record<string, number[]> = { producerNode: [process.pid], relayNode: [relay.pid!], consumerNode: [consumerChild.pid!], rabbitmq: beam, producerPg: [], relayPg: [], consumerPg: [] };
      for (const r of rows as Array<{ app: string; pid: number }>) {
        const g = r.app.startsWith('bench-producer') ? 'producerPg' : r.app.startsWith('strangler-relay') ? 'relayPg' : r.app.startsWith('bench-consumer') ? 'consumerPg' : null;
        if (g) groups[g]!.push(r.pid);
      }
      const perPid = new Map<string, number>();
      const out: Record<string, number> = {};
      for (const [g, pids] of Object.entries(groups)) {
        out[g] = 0;
        for (const pid of pids) {
          const v = cpuSeconds([pid]);
          perPid.set(`${g}:${pid}`, v);
          out[g] += v - (before?.get(`${g}:${pid}`) ?? 0);
        }
      }
      return { out, perPid, brokerSeen: beam.length > 0 };
    };
    // 3. Rounds: the ceiling (plain commits, nothing relayed), then the pipeline (as fast as
    // CLIENTS clients commit, relay and consumer running) until its backlog drained.
    const rounds: Array<{ ceiling: number; events: number; produced: number; drainedAfterMs: number }> = [];
    let samples: Array<[at: number, applied: number, committed: number]> = [];
    let cpuBefore: Awaited<ReturnType<typeof accounts>> | null = null;
    let lastRoundEvents = 0;
    let ceilingNodeCpu = 0;
    for (let r = 0; r < ROUNDS; r++) {
      const last = r === ROUNDS - 1;
      const nodeCpuBefore = debug ? cpuSeconds([process.pid]) : 0;
      const ceiling = await saturate(ceilingPool, CEILING_SECONDS, ceilingCounter);
      if (debug) ceilingNodeCpu += cpuSeconds([process.pid]) - nodeCpuBefore;
      if (debug && last) {
        const pids = await ceilingPids();
        const commits = ceilingCounter.n - ceilingWarmupCommits;
        console.error(`ceiling CPU µs per commit, all rounds: ${JSON.stringify({ producerNode: Math.round((ceilingNodeCpu / commits) * 1e6), producerPg: Math.round(((cpuSeconds(pids) - ceilingPgCpuWarmup) / commits) * 1e6) })}`);
      }
      const sent = counter.n;
      const appliedBefore = appliedTotal;
      if (debug && last) cpuBefore = await accounts();
      samples = [];
      const progress = { commits: 0 };
      const sampler = setInterval(() => samples.push([now(), appliedTotal, progress.commits]), 100);
      const run = await saturate(producers, THROUGHPUT_SECONDS, counter, progress);
      clearInterval(sampler);
      // Events applied per second over the window, but no more than were committed in it: what
      // is applied early in the window may be the backlog of the warm-up.
      const from = samples.find(([t]) => t >= run.start + THROUGHPUT_WARMUP_SECONDS * 1_000)!;
      const to = samples.at(-1)!;
      await waitUntil(() => appliedTotal - appliedBefore >= counter.n - sent, 60_000, 'the backlog to drain');
      lastRoundEvents = counter.n - sent;
      rounds.push({
        ceiling: ceiling.commits / ((ceiling.end - ceiling.start) / 1_000),
        events: Math.min(to[1] - from[1], to[2] - from[2]) / ((to[0] - from[0]) / 1_000),
        produced: run.commits / ((run.end - run.start) / 1_000),
        drainedAfterMs: Math.round(now() - run.end),
      });
      if (debug) console.error(`round ${r + 1}: ${JSON.stringify(rounds.at(-1), (_, v: unknown) => (typeof v === 'number' ? Math.round(v) : v))}`);
    }
    if (cpuBefore) {
      const { out } = await accounts(cpuBefore.perPid);
      console.error(`CPU µs per event during the last round's pipeline phase and drain: ${JSON.stringify(Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Math.round((v / lastRoundEvents) * 1e6)])))}`);
      // Events per consumer transaction and per relay mark statement (rows marked together share
      // published_at, the statement's now()).
      const { rows: marks } = await admin.raw(`select count(*)::int as events, count(distinct published_at)::int as marks from outbox where published_at is not null`);
      const m = marks[0] as { events: number; marks: number };
      console.error(`over all rounds: events per consumer transaction ${round(appliedTotal / appliedBatches)}, per relay mark ${round(m.events / m.marks)}`);
    }

    // 4. Latency at a steady 500 events/s: commit time here, applied time in the consumer. The
    // first LATENCY_SETTLE_SECONDS at that rate are not recorded: the relay and the consumer
    // adapt their batching to the rate they see, and the throughput rounds just before left them
    // tuned for saturation.
    await setRecording(true);
    const latencyCpuBefore = debug ? await accounts() : null;
    const committed = new Map<string, number>();
    const settleCount = LATENCY_SETTLE_SECONDS * LATENCY_RATE;
    const total = settleCount + LATENCY_SECONDS * LATENCY_RATE;
    const paceStart = now();
    let latencyStart = paceStart;
    // Transactions still open, counted rather than kept: holding thousands of settled promises
    // would only lengthen this process's garbage collections.
    let open = 0;
    let placeError: unknown = null;
    let allSettled = () => {};
    const lateBySecond: number[][] = [];
    for (let i = 0; i < total && !placeError; i++) {
      const due = paceStart + (i * 1_000) / LATENCY_RATE;
      const wait = due - now();
      if (wait > 0) await sleep(wait);
      else if (debug) (lateBySecond[Math.floor((due - paceStart) / 1_000)] ??= []).push(-wait);
      if (i === settleCount) latencyStart = now();
      const record = i >= settleCount;
      open++;
      placeOrder(producers, counter.n++).then(
        (id) => {
          if (record) committed.set(id, now());
          if (--open === 0) allSettled();
        },
        (err: unknown) => {
          placeError ??= err;
          if (--open === 0) allSettled();
        },
      );
    }
    if (open) await new Promise<void>((resolve) => (allSettled = resolve));
    if (placeError) throw placeError;
    await waitUntil(() => [...committed.keys()].every((id) => applied.has(id)), 30_000, 'the latency events to arrive');
    const latencies = [...committed].map(([id, t]) => applied.get(id)! - t).sort((a, b) => a - b);
    if (latencyCpuBefore) {
      const { out } = await accounts(latencyCpuBefore.perPid);
      console.error(`CPU µs per event at ${LATENCY_RATE}/s: ${JSON.stringify(Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Math.round((v / total) * 1e6)])))}`);
    }
    if (process.env.BENCH_DEBUG) {
      const perSecond: number[][] = [];
      for (const [id, t] of committed) (perSecond[Math.floor((t - latencyStart) / 1_000)] ??= []).push(applied.get(id)! - t);
      console.error('pacing: commits started late per second (count/max ms):', Array.from(lateBySecond, (v) => (v ? `${v.filter((x) => x > 1).length}/${round(Math.max(...v))}` : '0/0')).join(' '));
      console.error('latency p50/p99 per second:', perSecond.map((v) => { v.sort((a, b) => a - b); return `${round(percentile(v, 50))}/${round(percentile(v, 99))}`; }).join(' '));
      // Whether the slow events are spread out (steady queueing) or come in bursts (a process
      // stalled: a GC pause, a backend descheduled): a burst is a run of slow commits less than
      // BURST_GAP_MS apart.
      const BURST_GAP_MS = 20;
      const slow = [...committed].filter(([id, t]) => applied.get(id)! - t > 10).map(([, t]) => t).sort((a, b) => a - b);
      const bursts: number[][] = [];
      for (const t of slow) {
        const last = bursts.at(-1);
        if (last && t - last.at(-1)! < BURST_GAP_MS) last.push(t);
        else bursts.push([t]);
      }
      const sizes = bursts.map((b) => b.length).sort((a, b) => a - b);
      console.error(
        `over 10 ms: ${round((100 * slow.length) / committed.size)}% of events` +
          (bursts.length ? `, in ${bursts.length} bursts (median ${median(sizes)} events, largest ${sizes.at(-1)} over ${round(Math.max(...bursts.map((b) => b.at(-1)! - b[0]!)))} ms)` : ''),
      );
      const { rows } = await admin.raw(`select id, extract(epoch from published_at) * 1000 as p from outbox where id = any(?::uuid[])`, [[...committed.keys()]]);
      const stage = (f: (id: string, t: number) => number) => { const v = [...committed].map(([id, t]) => f(id, t)).sort((a, b) => a - b); return `${round(percentile(v, 50))}/${round(percentile(v, 99))}`; };
      const pub = new Map<string, number>(rows.map((r: { id: string; p: number }) => [r.id, Number(r.p)]));
      // published_at is written when the relay marks the row, which it does with its next claim
      // after the broker's confirm (up to one poll interval after the consumer may have the
      // event); "applying" is when the handler's applyAll ran (after begin, inbox and versions).
      const latencyBatches = new Set([...committed.keys()].map((id) => applied.get(id))).size;
      console.error(`at ${LATENCY_RATE}/s: events per consumer transaction ${round(committed.size / latencyBatches)}, per relay mark ${round(committed.size / new Set([...pub.values()]).size)}`);
      console.error('commit->marked', stage((id, t) => pub.get(id)! - t), 'commit->applying', stage((id, t) => receivedAt.get(id)! - t), 'applying->applied', stage((id) => applied.get(id)! - receivedAt.get(id)!));
      console.error("applied per 100 ms during the last round's pipeline phase:", samples.map(([, n], i) => (i ? n - samples[i - 1]![1] : 0)).join(' '));
    }

    // 5. The pipeline alone: DRAIN_EVENTS events committed in one statement (rows as appendEvent
    // writes them), relayed and applied with no producer running. Its CPU per event, by process,
    // moves far less from run to run than the ratio, which is the share of the machine the
    // pipeline leaves the producers (README, "Measured here"): the figure to compare when
    // changing the relay or the consumer. CPU is read from /proc (Linux, services on this host).
    let drain: Record<string, unknown> | null = null;
    if (DRAIN_EVENTS) {
      await setRecording(false);
      const before = await accounts();
      const appliedBefore = appliedTotal;
      const batchesBefore = appliedBatches;
      await admin.raw(
        `insert into outbox (id, aggregate_type, aggregate_id, aggregate_version, event_type, payload, headers)
         select gen_random_uuid(), 'order', 'drain-' || g, 1, 'order.placed',
                jsonb_build_object('id', 'drain-' || g, 'status', 'placed', 'totalCents', 2500, 'currency', 'EUR', 'items', ?::jsonb),
                jsonb_build_object('origin', 'bench', 'schemaVersion', '1')
           from generate_series(1, ?::int) g`,
        [JSON.stringify([{ sku: 'SKU-1', quantity: 2, unitPriceCents: 1250 }]), DRAIN_EVENTS],
      );
      const start = now();
      await waitUntil(() => appliedTotal - appliedBefore >= DRAIN_EVENTS, 120_000, `the ${DRAIN_EVENTS} events of the drain phase to be applied`);
      const seconds = (now() - start) / 1_000;
      const { out, brokerSeen } = await accounts(before.perPid);
      const perEvent = (group: string) => Math.round((out[group]! / DRAIN_EVENTS) * 1e6);
      const cpu = process.platform === 'linux' ? { relayNode: perEvent('relayNode'), relayPg: perEvent('relayPg'), rabbitmq: brokerSeen ? perEvent('rabbitmq') : null, consumerNode: perEvent('consumerNode'), consumerPg: perEvent('consumerPg') } : null;
      drain = {
        events: DRAIN_EVENTS,
        eventsPerSec: Math.round(DRAIN_EVENTS / seconds),
        eventsPerConsumerTransaction: round((appliedTotal - appliedBefore) / (appliedBatches - batchesBefore)),
        cpuUsPerEvent: cpu && { ...cpu, total: Object.values(cpu).reduce<number>((a, v) => a + (v ?? 0), 0) },
      };
    }

    const result = {
      eventsPerSec: Math.round(median(rounds.map((r) => r.events))),
      p50Ms: round(percentile(latencies, 50)),
      p99Ms: round(percentile(latencies, 99)),
      ceilingCommitsPerSec: Math.round(median(rounds.map((r) => r.ceiling))),
      ratio: round(median(rounds.map((r) => r.events / r.ceiling))),
      roundRatios: rounds.map((r) => round(r.events / r.ceiling)),
      producedPerSec: Math.round(median(rounds.map((r) => r.produced))),
      drainedAfterMs: Math.max(...rounds.map((r) => r.drainedAfterMs)),
      clients: CLIENTS,
      latencyRatePerSec: LATENCY_RATE,
      latencySamples: latencies.length,
      maxMs: round(latencies.at(-1)!),
      drain,
    };
    console.log(JSON.stringify(result));
  } finally {
    clearTimeout(deadline);
    await cleanup();
  }
}

/**
 * Refuses to start when Postgres cannot take the connections the run opens (two pools of CLIENTS,
 * the admin connection, the relay's and the consumer's): otherwise a pool would fail midway with
 * "too many clients already". Checked before anything is created; the checking connection itself
 * counts as the admin one.
 */
async function checkConnections(connection: PgConnection): Promise<void> {
  const others = RELAY_CONNECTIONS + CONSUMER_POOL;
  const { max, free } = await withAdminClient(connection, async (client) => {
    const { rows } = await client.query<{ max: number; free: number }>(
      `select current_setting('max_connections')::int as max,
              current_setting('max_connections')::int
                - (select count(*) from pg_stat_activity where backend_type = 'client backend')::int
                - case when (select rolsuper from pg_roles where rolname = current_user) then 0
                       else current_setting('superuser_reserved_connections')::int end as free`,
    );
    return rows[0]!;
  });
  const needed = 2 * CLIENTS + others;
  if (needed > free) {
    throw new Error(
      `BENCH_CLIENTS=${CLIENTS} needs ${needed} more Postgres connections (two pools of ${CLIENTS}, ${others} for the relay and the consumer), but the server has ${free} free (max_connections ${max}): lower BENCH_CLIENTS to at most ${Math.max(0, Math.floor((free - others) / 2))} or raise max_connections.`,
    );
  }
}

/** CPU seconds (user + system) of Linux processes, for BENCH_DEBUG accounting. */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // exited
    }
  }
  return ticks / 100;
}

function round(x: number) {
  return Math.round(x * 100) / 100;
}

function sleep(ms: number) {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitUntil(check: () => boolean, timeoutMs: number, what: string) {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}
