import knexFactory, { type Knex } from 'knex';
import pg from 'pg';
import type { PgConnection } from './config.ts';
import { settlesWithin } from './retry.ts';

// bigint (int8) columns such as outbox `seq` and counts come back as JS numbers: every value
// this system stores in int8 stays far below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export type { Knex };

export interface DbOptions {
  /** Pool bounds; the defaults suit one service process. */
  pool?: { min?: number; max?: number };
  /** Shown in pg_stat_activity, so a leaked or stuck connection names its owner. */
  applicationName?: string;
  /**
   * Longest a statement may run (statement_timeout, on the server) or wait for its answer (on the
   * client, 1 s more: a server that went silent). Default none.
   */
  statementTimeoutMs?: number;
}

/** A knex instance on one database. The caller owns it and must `destroy()` it. */
export function createDb(connection: PgConnection, { pool, applicationName = 'strangler', statementTimeoutMs }: DbOptions = {}): Knex {
  const timeouts = statementTimeoutMs === undefined ? {} : { statement_timeout: statementTimeoutMs, query_timeout: statementTimeoutMs + 1_000 };
  return knexFactory({
    client: 'pg',
    // A connect that hangs (host down, partition) fails after 5 s instead of holding a pool
    // slot until the OS gives up on the TCP handshake.
    connection: { ...connection, ...timeouts, application_name: applicationName, connectionTimeoutMillis: 5_000 },
    pool: { min: pool?.min ?? 0, max: pool?.max ?? 10, idleTimeoutMillis: 10_000 },
    acquireConnectionTimeout: 10_000,
    // Knex prints connection errors to the console as well as rejecting the query; the caller
    // gets the error either way, so the console copy only shows with LOG_LEVEL=debug.
    log: process.env.LOG_LEVEL === 'debug' ? undefined : { warn: () => {}, error: () => {}, deprecate: () => {}, debug: () => {} },
  });
}

const IDENT = /^[a-z_][a-z0-9_]*$/;
export function assertIdentifier(name: string, what = 'database name'): string {
  if (!IDENT.test(name) || name.length > 63) throw new Error(`Invalid ${what} "${name}": use lower-case letters, digits and _ (at most 63).`);
  return name;
}

/**
 * Ends a pg client, or drops its socket when the server does not answer within `ms` (a
 * partition). Never rejects.
 */
export async function endPgClient(client: pg.Client, ms = 2_000): Promise<void> {
  if (!(await settlesWithin(client.end(), ms))) (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}

/** Runs `fn` with a short-lived client on the server's `postgres` database (for CREATE/DROP DATABASE). */
export async function withAdminClient<T>(connection: PgConnection, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ ...connection, database: 'postgres', application_name: 'strangler-admin' });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Creates `database` if it does not exist (optionally from a template). Returns true if created. */
export async function ensureDatabase(connection: PgConnection, database: string, template?: string): Promise<boolean> {
  assertIdentifier(database);
  return withAdminClient(connection, async (client) => {
    const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [database]);
    if (rowCount) return false;
    try {
      await client.query(`create database "${database}"${template ? ` template "${assertIdentifier(template)}"` : ''}`);
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === '42P04') return false; // created concurrently
      throw err;
    }
  });
}

export async function dropDatabase(connection: PgConnection, database: string, { force = false } = {}): Promise<void> {
  assertIdentifier(database);
  await withAdminClient(connection, (client) => client.query(`drop database if exists "${database}"${force ? ' with (force)' : ''}`));
}
