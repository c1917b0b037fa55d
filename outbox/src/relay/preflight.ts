import pg from 'pg';
import type { PgConnection } from '@strangler/platform';

/**
 * What keeps a relay from ever publishing `database`, said so that the operator can fix it, or
 * null. Checked once at start: a database that does not exist, credentials refused, or a
 * database without the outbox (not migrated, or the wrong --db) would otherwise have the relay
 * log the same error several times a second for as long as it runs. A server that cannot be
 * reached is not a problem here: it may be starting, and the relay reconnects with backoff.
 */
export async function outboxProblem(connection: PgConnection, database: string): Promise<string | null> {
  const client = new pg.Client({ ...connection, application_name: 'strangler-relay-check', connectionTimeoutMillis: 5_000, query_timeout: 10_000 });
  client.on('error', () => {}); // a connection lost after the check: nothing to report
  try {
    await client.connect();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === '3D000') return `Database "${database}" does not exist on ${connection.host}:${connection.port}: check --db (and PGHOST, PGPORT or DATABASE_URL), or create and migrate it first ("npm run strangler -- migrate", or start its owner once).`;
    if (code === '28P01' || code === '28000') return `Postgres refused the relay's login to "${database}": ${(err as Error).message}. Check PGUSER and PGPASSWORD (or DATABASE_URL).`;
    return null;
  }
  try {
    const { rows } = await client.query<{ outbox: boolean; relay: boolean }>("select to_regclass('outbox') is not null as outbox, to_regclass('outbox_relay') is not null as relay");
    if (rows[0]!.outbox && rows[0]!.relay) return null;
    return `Database "${database}" has no outbox (${rows[0]!.outbox ? 'table outbox_relay is missing' : 'no table outbox'} in its search path): run its migrations ("npm run strangler -- migrate", or start its owner once), or check --db.`;
  } catch {
    return null; // the relay's own connection reports what goes on
  } finally {
    await client.end().catch(() => {});
  }
}
