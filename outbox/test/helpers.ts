import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Knex } from 'knex';
import { adminConnection, type TestBroker, type TestDatabase } from '@strangler/platform/testing';
import { repoRoot, withAdminClient } from '@strangler/platform';
import { appendEvent, type EventHandler } from '../src/index.ts';
import { CLAIM_MAX_STORED_BYTES, CLAIM_SQL } from '../src/relay/claim.ts';

export const execFileAsync = promisify(execFile);

/** Polls `check` every 50 ms until it returns a truthy value; fails after `timeoutMs` saying `what`. */
export async function waitFor<T>(what: string, check: () => Promise<T> | T, timeoutMs = 20_000): Promise<Exclude<T, null | undefined | false | 0 | ''>> {
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

/**
 * A TCP proxy to `host:port` that can fail the ways networks do. `partition()` makes it drop
 * whatever either side sends, as a network partition would (writes succeed, nothing arrives):
 * every connection, or only those open now ('existing': one blackholed TCP flow, new ones work).
 * `goDown()` closes every connection and drops new ones as soon as they are accepted (the server
 * is down). `dropAfter(ms)` closes each connection accepted from then on `ms` after it was
 * accepted (a server that takes connections and then drops them; null: no more). `stall(ms)`
 * holds each new connection that long before the server sees it (a slow connect).
 * `holdReplies()` keeps what the server sends until `releaseReplies()` (a server slow to answer:
 * the client's requests arrive, the answers wait). `accepted` counts the connections it accepted.
 */
export async function tcpProxy(host: string, port: number) {
  let silent = false;
  let down = false;
  let accepted = 0;
  let lifetimeMs: number | null = null;
  let stallMs = 0;
  let held: Array<() => void> | null = null;
  const silenced = new Set<net.Socket>();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    accepted++;
    if (down) return void client.destroy();
    if (lifetimeMs !== null) setTimeout(() => client.destroy(), lifetimeMs).unref();
    client.on('error', () => {});
    // Until piped, what the client sends waits in its socket (no 'data' listener yet).
    if (stallMs) setTimeout(() => pipe(client), stallMs).unref();
    else pipe(client);
  });
  const pipe = (client: net.Socket) => {
    if (client.destroyed) return;
    const upstream = net.connect(port, host);
    for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
      sockets.add(from);
      from.on('data', (chunk) => {
        if (silent || silenced.has(from)) return;
        if (held && from === upstream) held.push(() => to.write(chunk));
        else to.write(chunk);
      });
      from.on('error', () => {});
      from.on('close', () => {
        sockets.delete(from);
        silenced.delete(from);
        to.destroy();
      });
    }
  };
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    get accepted() {
      return accepted;
    },
    partition: (which: 'all' | 'existing' = 'all') => {
      if (which === 'all') silent = true;
      else for (const s of sockets) silenced.add(s);
    },
    holdReplies: () => {
      held ??= [];
    },
    releaseReplies: () => {
      const writes = held ?? [];
      held = null;
      for (const write of writes) write();
    },
    stall: (ms: number) => {
      stallMs = ms;
    },
    dropAfter: (ms: number | null) => {
      lifetimeMs = ms;
    },
    goDown: () => {
      down = true;
      for (const s of sockets) s.destroy();
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** tcpProxy in front of the broker; `url` is `brokerUrl` with the proxy's address. */
export async function partitionableProxy(brokerUrl: string) {
  const target = new URL(brokerUrl);
  const proxy = await tcpProxy(target.hostname, Number(target.port || 5672));
  const url = new URL(brokerUrl);
  url.hostname = '127.0.0.1';
  url.port = String(proxy.port);
  return Object.assign(proxy, { url: url.toString() }); // not a spread: it would freeze `accepted`
}

/**
 * A small domain for the tests: `items` is the writer's entity (with its `version`), `replica`
 * the consumer's copy, `applied` a log of every effect the consumer had, in order.
 */
export async function createDomainTables(knex: Knex): Promise<void> {
  await knex.raw(`
    create table items (id text primary key, version int not null);
    create table replica (id text primary key, version int not null);
    create table applied (n bigint generated always as identity primary key, event_id text not null, aggregate_id text not null, version int not null)`);
}

/** One business write: bumps the item's version and appends its event, in one transaction. */
export async function writeEvent(knex: Knex, aggregateId: string, origin = 'monolith'): Promise<{ id: string; version: number }> {
  return knex.transaction(async (trx) => {
    const { rows } = await trx.raw<{ rows: Array<{ version: number }> }>(
      'insert into items (id, version) values (?, 1) on conflict (id) do update set version = items.version + 1 returning version',
      [aggregateId],
    );
    const version = rows[0]!.version;
    const { id } = await appendEvent(trx, {
      aggregateType: 'item',
      aggregateId,
      aggregateVersion: version,
      eventType: version === 1 ? 'item.created' : 'item.updated',
      payload: { id: aggregateId, version },
      origin,
    });
    return { id, version };
  });
}

/**
 * Writes `count` events spread over `aggregates` items with `writers` concurrent transactions.
 * `pauseMs` between a writer's transactions stretches the stream out in time.
 */
export async function writeStream(knex: Knex, { count, aggregates, writers = 4, pauseMs = 0, prefix = 'a' }: { count: number; aggregates: number; writers?: number; pauseMs?: number; prefix?: string }): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: writers }, async () => {
      while (next < count) {
        const i = next++;
        await writeEvent(knex, `${prefix}${i % aggregates}`);
        if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
      }
    }),
  );
}

/** Applies item events to `replica` under the version rule and logs each effect to `applied`. */
export const replicaHandler = (onApply?: (event: { id: string; aggregateId: string }) => void | Promise<void>): EventHandler => ({
  async versionOf(trx, event) {
    const row = await trx('replica').where({ id: event.aggregateId }).first('version');
    return row ? row.version : null;
  },
  async apply(trx, event) {
    await onApply?.(event);
    await trx.raw('insert into replica (id, version) values (?, ?) on conflict (id) do update set version = excluded.version', [event.aggregateId, event.aggregateVersion]);
    await trx('applied').insert({ event_id: event.id, aggregate_id: event.aggregateId, version: event.aggregateVersion });
  },
});

/**
 * Checks the consumer's log against the outbox: every event applied exactly once, and each
 * aggregate's versions applied in order 1, 2, 3 ...
 */
export async function assertExactlyOnceInOrder(knex: Knex, expected: number): Promise<void> {
  const { rows } = await knex.raw<{ rows: Array<{ event_id: string; aggregate_id: string; version: number }> }>('select event_id, aggregate_id, version from applied order by n');
  const ids = new Set(rows.map((r) => r.event_id));
  const outbox = await knex('outbox').count<{ count: number }[]>({ count: '*' });
  if (rows.length !== expected || ids.size !== expected || Number(outbox[0]!.count) !== expected) {
    throw new Error(`expected ${expected} events applied once each; outbox has ${outbox[0]!.count}, applied ${rows.length} effects of ${ids.size} distinct events`);
  }
  const last = new Map<string, number>();
  for (const r of rows) {
    const prev = last.get(r.aggregate_id) ?? 0;
    if (r.version !== prev + 1) throw new Error(`aggregate ${r.aggregate_id}: version ${r.version} applied after ${prev}`);
    last.set(r.aggregate_id, r.version);
  }
}

export const appliedCount = async (knex: Knex) => Number((await knex('applied').count<{ c: number }[]>({ c: '*' }))[0]!.c);

export interface RelayProcess {
  child: ChildProcess;
  output: string[];
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

const children = new Set<ChildProcess>();
// Never let a relay outlive the test worker (tests stop theirs in `finally`; this covers crashes).
process.once('exit', () => children.forEach((c) => c.kill('SIGKILL')));

/**
 * Runs `npm run relay` for real, as a child process (so it can be SIGKILLed), on the test's
 * database and exchange. The test must kill it (in a `finally`) before the file ends.
 */
export function spawnRelay(db: TestDatabase, broker: TestBroker, env: Record<string, string> = {}): RelayProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'outbox/src/relay-main.ts', '--db', db.name], {
    cwd: repoRoot,
    env: {
      ...process.env,
      PGHOST: db.connection.host,
      PGPORT: String(db.connection.port),
      PGUSER: db.connection.user,
      ...(db.connection.password ? { PGPASSWORD: db.connection.password } : {}),
      AMQP_URL: broker.url,
      RELAY_EXCHANGE: broker.exchange,
      RELAY_METRICS_PORT: '0',
      RELAY_POLL_INTERVAL_MS: '200',
      RELAY_LEASE_RETRY_MS: '250',
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  const collect = (chunk: Buffer) => output.push(...chunk.toString().split('\n').filter(Boolean));
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 12_000))]);
  };
  children.add(child);
  void exited.then(() => children.delete(child));
  return { child, output, exited, kill };
}

/** Terminates this test database's backends whose application_name matches `pattern` (never another database's). */
export async function terminateBackends(database: string, pattern: string): Promise<number> {
  return withAdminClient(adminConnection(), async (c) => {
    const { rows } = await c.query<{ ok: boolean }>(
      'select pg_terminate_backend(pid) as ok from pg_stat_activity where datname = $1 and application_name like $2 and pid <> pg_backend_pid()',
      [database, pattern],
    );
    return rows.filter((r) => r.ok).length;
  });
}

/** Reads every message currently in `queue` (acking them), for tests that inspect what was published. */
export async function drainQueue(broker: TestBroker, queue: string): Promise<Array<{ id: string; routingKey: string; headers: Record<string, unknown>; body: unknown }>> {
  const conn = await broker.connect('drain');
  try {
    const ch = await conn.createChannel();
    const out = [];
    for (;;) {
      const msg = await ch.get(queue, { noAck: true });
      if (!msg) break;
      out.push({ id: String(msg.properties.messageId), routingKey: msg.fields.routingKey, headers: msg.properties.headers ?? {}, body: JSON.parse(msg.content.toString()) });
    }
    return out;
  } finally {
    await conn.close();
  }
}

/** The relay's claim with literal parameters, for EXPLAIN: 500 rows, nothing in flight or confirmed, pending rows from `start` up, no floor candidate. */
export const claimSqlLiteral = (start = 0) =>
  CLAIM_SQL.replaceAll('$1', '500').replaceAll('$2', "'{}'").replaceAll('$3', "'{}'").replaceAll('$4', String(start)).replaceAll('$5', 'null').replaceAll('$6', 'false').replaceAll('$7', String(CLAIM_MAX_STORED_BYTES));
