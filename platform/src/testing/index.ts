import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll } from 'vitest';
import type { Knex } from 'knex';
import { pgConnection, type PgConnection } from '../config.ts';
import { createDb, withAdminClient } from '../db.ts';
import { connectAmqp, openAmqpConnections, type ChannelModel } from '../amqp.ts';
import { listen, type RunningServer } from '../http.ts';
import { adminConnection, testEnv } from './templates.ts';

export { adminConnection, testEnv };

export interface TestDatabase {
  name: string;
  connection: PgConnection;
  /** A knex pool on the database, destroyed before the database is dropped. */
  knex: Knex;
  /** Opens another pool (closed automatically at the end of the file). */
  newPool(applicationName?: string): Knex;
}

const execFileAsync = promisify(execFile);
const unique = () => `${Math.floor(Date.now() / 1000)}_${randomBytes(4).toString('hex')}`;

/**
 * Gives the calling test file its own database, cloned from the migrated template of `owner`
 * (a folder under `migrations/`). Call it at the file's top level: vitest 4 never runs an
 * `afterAll` registered inside `beforeAll` or a test, so the database would be left behind. At
 * the end of the file the pools it handed out are closed and the database dropped WITHOUT
 * force: if anything still holds a connection (a leaked pool, relay or consumer), the file fails
 * and names it.
 */
export async function createTestDatabase(owner: string): Promise<TestDatabase> {
  const templates = JSON.parse(process.env.STRANGLER_TEST_TEMPLATES ?? '{}') as Record<string, string>;
  const template = templates[owner];
  if (!template) throw new Error(`No test template for "${owner}": is there a migrations/${owner} folder, and is vitest running with the global setup?`);
  const name = `t_${unique()}_${owner}`.slice(0, 63);
  const admin = adminConnection();
  // CREATE DATABASE ... TEMPLATE fails while another session is connected to the template,
  // which only happens for an instant when files start together; retry briefly.
  for (let attempt = 0; ; attempt++) {
    try {
      await withAdminClient(admin, (c) => c.query(`create database "${name}" template "${template}"`));
      break;
    } catch (err) {
      if ((err as { code?: string }).code !== '55006' || attempt > 50) throw err;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
  const connection = pgConnection(testEnv(), name);
  const pools: Knex[] = [];
  const newPool = (applicationName = 'test') => {
    const pool = createDb(connection, { applicationName, pool: { max: 10 } });
    pools.push(pool);
    return pool;
  };
  const knex = newPool('test-main');
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.destroy()));
    await dropChecked(admin, name);
  });
  return { name, connection, knex, newPool };
}

async function dropChecked(admin: PgConnection, name: string) {
  await withAdminClient(admin, async (c) => {
    // Give connections closed a moment ago time to leave pg_stat_activity.
    for (let i = 0; i < 50; i++) {
      const { rows } = await c.query<{ application_name: string; n: number }>(
        'select application_name, count(*)::int as n from pg_stat_activity where datname = $1 group by 1',
        [name],
      );
      if (!rows.length) {
        await c.query(`drop database "${name}"`);
        return;
      }
      if (i === 49) {
        await c.query(`drop database "${name}" with (force)`);
        throw new Error(`Leaked database connections at the end of the file: ${rows.map((r) => `${r.n} x "${r.application_name}"`).join(', ')}. Close every pool, relay and consumer the test starts.`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  });
}

/** Queue names starting with `prefix`, from rabbitmqctl (absent: none, cleanup is best effort). */
async function listQueues(prefix: string): Promise<string[]> {
  try {
    const { stdout } = await execFileAsync('rabbitmqctl', ['-q', 'list_queues', 'name'], { timeout: 15_000 });
    return stdout.split('\n').map((l) => l.trim()).filter((q) => q.startsWith(`${prefix}.`) || q.startsWith(`${prefix}-`));
  } catch {
    return [];
  }
}

export interface TestBroker {
  url: string;
  /** Unique per file: use it for the exchange and every queue name so files never share state. */
  prefix: string;
  exchange: string;
  /** Opens a tracked connection (closed at the end of the file if the test did not). */
  connect(name?: string): Promise<ChannelModel>;
}

/**
 * Gives the calling test file its own exchange and queue prefix. At the end of the file it
 * deletes the exchange and every queue named `<prefix>.…` or `<prefix>-…`, and fails if a connection
 * opened through `connectAmqp` in this file is still open.
 */
export async function createTestBroker(): Promise<TestBroker> {
  const url = testEnv().AMQP_URL;
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const exchange = `${prefix}.strangler.events`;
  const baseline = openAmqpConnections();
  const conns: ChannelModel[] = [];
  afterAll(async () => {
    const leaked = openAmqpConnections() - baseline;
    await Promise.all(conns.map((c) => c.close().catch(() => {})));
    const admin = await connectAmqp(url, `${prefix}-cleanup`);
    try {
      const ch = await admin.createChannel();
      await ch.deleteExchange(exchange).catch(() => {});
      for (const q of await listQueues(prefix)) await ch.deleteQueue(q).catch(() => {});
      await ch.close().catch(() => {});
    } finally {
      await admin.close();
    }
    if (leaked > 0) throw new Error(`${leaked} AMQP connection(s) still open at the end of the file: close every relay, consumer and connection the test starts.`);
  });
  return {
    url,
    prefix,
    exchange,
    async connect(name = 'test') {
      const conn = await connectAmqp(url, `${prefix}-${name}`);
      conns.push(conn);
      return conn;
    },
  };
}

/** Listens on a free loopback port and closes the server at the end of the file. */
export async function startServer(app: Parameters<typeof listen>[0]): Promise<RunningServer> {
  const running = await listen(app, 0);
  afterAll(() => running.close(1_000));
  return running;
}
export * from './otlp.ts';
