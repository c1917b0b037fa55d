import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import net from 'node:net';
import { loadConfig, pgEnv, amqpEnv, pgConnection, type PgConnection } from '../config.ts';
import { createDb, withAdminClient } from '../db.ts';
import { migrateLatest } from '../migrate.ts';
import { repoRoot } from '../paths.ts';

export const testEnv = () => loadConfig({ ...pgEnv, ...amqpEnv });
export const adminConnection = (): PgConnection => pgConnection(testEnv(), 'postgres');

async function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(1_000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/** Waits up to 30 s for Postgres and RabbitMQ, then fails saying how to start them. */
export async function waitForServices(timeoutMs = 30_000): Promise<void> {
  const env = testEnv();
  const pg = adminConnection();
  const amqp = new URL(env.AMQP_URL);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [pgUp, amqpUp] = await Promise.all([canConnect(pg.host, pg.port), canConnect(amqp.hostname, Number(amqp.port || 5672))]);
    if (pgUp && amqpUp) return;
    if (Date.now() > deadline) {
      throw new Error(
        [
          !pgUp && `Postgres is not reachable at ${pg.host}:${pg.port} (start it: pg_ctlcluster --skip-systemctl-redirect <version> main start, or set PGHOST/PGPORT).`,
          !amqpUp && `RabbitMQ is not reachable at ${amqp.host} (start it: rabbitmq-server -detached, or docker compose up -d rabbitmq, or set AMQP_URL).`,
        ]
          .filter(Boolean)
          .join('\n'),
      );
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function migrationsHash(dir: string, extra: string[]): Promise<string> {
  const hash = createHash('sha256');
  for (const f of (await readdir(dir)).sort()) hash.update(f).update(await readFile(path.join(dir, f)));
  for (const f of extra) hash.update(await readFile(f));
  return hash.digest('hex').slice(0, 10);
}

/**
 * One template per `migrations/<owner>` folder, named after a hash of its migrations (and the
 * shared outbox/inbox schema), so parallel runs and unchanged schemas reuse it. Built under a
 * temporary name and renamed when complete, so no run ever clones a half-migrated template.
 * Also drops test databases older than an hour left by crashed runs.
 */
export async function prepareTemplates(): Promise<Record<string, string>> {
  const admin = adminConnection();
  const root = path.join(repoRoot, 'migrations');
  const owners = (await readdir(root, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  const sharedSchema = (await readdir(path.join(repoRoot, 'outbox/src'))).filter((f) => /schema/.test(f)).map((f) => path.join(repoRoot, 'outbox/src', f));
  const templates: Record<string, string> = {};
  await dropStaleTestDatabases(admin);
  for (const owner of owners) {
    const name = `tpl_${owner}_${await migrationsHash(path.join(root, owner), sharedSchema)}`;
    templates[owner] = name;
    const exists = await withAdminClient(admin, async (c) => (await c.query('select 1 from pg_database where datname = $1', [name])).rowCount);
    if (exists) continue;
    const building = `${name}_b${process.pid}`;
    await withAdminClient(admin, (c) => c.query(`drop database if exists "${building}"; `).then(() => c.query(`create database "${building}"`)));
    const knex = createDb({ ...admin, database: building }, { applicationName: 'strangler-test-template' });
    try {
      await migrateLatest(knex, path.join(root, owner));
    } finally {
      await knex.destroy();
    }
    await withAdminClient(admin, async (c) => {
      try {
        await c.query(`alter database "${building}" rename to "${name}"`);
      } catch (err) {
        if ((err as { code?: string }).code !== '42P04') throw err; // another run finished first
        await c.query(`drop database "${building}"`);
      }
    });
  }
  return templates;
}

async function dropStaleTestDatabases(admin: PgConnection) {
  await withAdminClient(admin, async (c) => {
    const { rows } = await c.query<{ datname: string }>("select datname from pg_database where datname ~ '^t_[0-9]+_'");
    const hourAgo = Math.floor(Date.now() / 1000) - 3600;
    for (const { datname } of rows) {
      if (Number(datname.split('_')[1]) < hourAgo) await c.query(`drop database if exists "${datname}" with (force)`);
    }
  });
}
