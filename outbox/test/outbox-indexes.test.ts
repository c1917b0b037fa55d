import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '@strangler/platform/testing';
import { createDb, migrateLatest, migrationsDir, repoRoot } from '@strangler/platform';
import { waitFor } from './helpers.ts';

/**
 * migrations/monolith/101_outbox_claim_indexes.ts (the same code is migrations/notification/006)
 * on an EXISTING outbox (one `outbox_unpublished_idx`), brought to the two claim indexes by a
 * migration that runs outside a transaction, when it is interrupted.
 */
const db = await createTestDatabase('monolith');
const other = await createTestDatabase('monolith');

/** Puts a database back in its state before 101: the old claim index, 101 not applied. */
async function pre101(knex: typeof db.knex) {
  await knex.raw('drop index outbox_pending_idx');
  await knex.raw('drop index outbox_retry_idx');
  await knex.raw('create index outbox_unpublished_idx on outbox (seq) where published_at is null');
  await knex('knex_migrations').where({ name: '101_outbox_claim_indexes.ts' }).del();
  const rows = Array.from({ length: 2_000 }, (_, i) => ({
    id: randomUUID(),
    aggregate_type: 'item',
    aggregate_id: `a${i}`,
    aggregate_version: 1,
    event_type: 'item.created',
    payload: {},
    published_at: i < 1_990 ? knex.fn.now() : null,
  }));
  await knex.batchInsert('outbox', rows, 500);
  await knex.raw('analyze outbox');
}

/** A transaction that writes to the outbox (any open writer): CREATE INDEX CONCURRENTLY waits for it. */
async function openWriter(): Promise<pg.Client> {
  const c = new pg.Client({ ...db.connection, application_name: 'outbox-writer' });
  await c.connect();
  await c.query('begin');
  await c.query('lock table outbox in row exclusive mode');
  return c;
}

async function indexValidity(knex: typeof db.knex) {
  const { rows } = await knex.raw<{ rows: Array<{ relname: string; indisvalid: boolean }> }>(
    `select c.relname, i.indisvalid from pg_index i join pg_class c on c.oid = i.indexrelid
      where c.relname in ('outbox_pending_idx', 'outbox_retry_idx', 'outbox_unpublished_idx') order by 1`,
  );
  return Object.fromEntries(rows.map((r) => [r.relname, r.indisvalid]));
}

describe('migration 101 on an existing outbox', () => {
  it('a re-run after an interrupted concurrent build leaves the claim index valid', async () => {
    await pre101(db.knex);
    // First run: the concurrent build is cancelled (here a database statement_timeout while it
    // waits for a writer; a deploy timeout, pg_cancel_backend or a restart do the same).
    await db.knex.raw(`alter database "${db.name}" set statement_timeout = '1s'`);
    const writer = await openWriter();
    const first = createDb(db.connection, { applicationName: 'strangler-migrate', pool: { max: 1 } });
    try {
      await expect(migrateLatest(first, migrationsDir('monolith'))).rejects.toThrow(/statement timeout/);
    } finally {
      await first.destroy();
      await writer.query('commit');
      await writer.end();
      await db.knex.raw(`alter database "${db.name}" reset statement_timeout`);
    }
    // The operator runs it again: it succeeds ...
    const second = createDb(db.connection, { applicationName: 'strangler-migrate', pool: { max: 1 } });
    try {
      expect(await migrateLatest(second, migrationsDir('monolith'))).toEqual(['101_outbox_claim_indexes.ts']);
    } finally {
      await second.destroy();
    }
    // ... so the relay's claim index must be there and usable (the old one is gone).
    // The claim's first branch, planned with the lease session's settings (relay/leader.ts).
    const plan = await db.knex.transaction(async (trx) => {
      await trx.raw('set local enable_seqscan = off; set local enable_bitmapscan = off');
      return (await trx.raw<{ rows: Array<{ 'QUERY PLAN': string }> }>(
        `explain select seq from outbox where published_at is null and next_attempt_at is null order by seq limit 500`,
      )).rows;
    });
    expect(plan.map((r) => r['QUERY PLAN']).join('\n')).toMatch(/Index (Only )?Scan using outbox_pending_idx/);
    expect(await indexValidity(db.knex)).toEqual({ outbox_pending_idx: true, outbox_retry_idx: true });
  });

  it('`strangler migrate` killed during the concurrent build can be run again', async () => {
    await pre101(other.knex);
    const writer = new pg.Client({ ...other.connection, application_name: 'outbox-writer' });
    await writer.connect();
    await writer.query('begin');
    await writer.query('lock table outbox in row exclusive mode');
    const env = {
      ...process.env,
      PGHOST: other.connection.host,
      PGPORT: String(other.connection.port),
      PGUSER: other.connection.user,
      MONOLITH_DB: other.name,
    };
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/src/cli.ts', 'migrate', 'monolith'], { cwd: repoRoot, env, stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    try {
      // The build is waiting for the writer (a long build on a big outbox): the operator, or a
      // deploy timeout, kills the command.
      await waitFor('the concurrent build to start', async () => {
        const { rows } = await other.knex.raw(`select 1 from pg_stat_activity where datname = ? and query ilike 'create index concurrently%'`, [other.name]);
        return rows.length > 0;
      }, 20_000);
      child.kill('SIGKILL');
      await exited;
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await writer.query('commit').catch(() => {});
      await writer.end();
    }
    // Let the orphaned backend finish and leave.
    await waitFor('the killed command to leave the database', async () => {
      const { rows } = await other.knex.raw(`select 1 from pg_stat_activity where datname = ? and application_name = 'strangler-migrate'`, [other.name]);
      return rows.length === 0;
    }, 20_000);
    const rerun = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const c = spawn(process.execPath, ['--import', 'tsx', 'scripts/src/cli.ts', 'migrate', 'monolith'], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout!.on('data', (d) => (out += d));
      c.stderr!.on('data', (d) => (out += d));
      const t = setTimeout(() => c.kill('SIGKILL'), 25_000);
      c.once('exit', (code) => {
        clearTimeout(t);
        resolve({ code, out });
      });
    });
    expect(rerun.code, rerun.out).toBe(0);
    expect(await indexValidity(other.knex)).toEqual({ outbox_pending_idx: true, outbox_retry_idx: true });
  }, 60_000);
});
