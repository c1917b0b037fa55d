import type { Knex } from 'knex';
import { sourceSelect, type SyncSpec } from './spec.ts';

export interface BackfillOptions {
  /**
   * Rows per batch: one SELECT and one transaction of multi-row upserts (each at most 65,535
   * parameters, Postgres's limit for a statement) with the checkpoint. Default 1,000.
   */
  batchSize?: number;
  /** Called after every batch with rows done so far and the snapshot's total (awaited). */
  onProgress?: (done: number, total: number) => void | Promise<void>;
  /** Checked between batches: an aborted backfill stops cleanly and resumes from its checkpoint. */
  signal?: AbortSignal;
}

export interface BackfillResult {
  spec: string;
  total: number;
  copied: number;
  /** Rows skipped because the service already held that version or a newer one (up to date). */
  skippedNewer: number;
  resumedAfter: string | null;
}

/** The most parameters one Postgres statement takes. */
const MAX_PARAMETERS = 65_535;

/** Checkpoints live in the target database, next to the data they describe. */
export async function ensureCheckpointTable(target: Knex): Promise<void> {
  await target.raw(`create table if not exists strangler_backfill (
    spec text primary key, last_key text, done boolean not null default false,
    copied bigint not null default 0, updated_at timestamptz not null default now())`);
  // Added later: checkpoints written before it have no source (null), and are resumed as before.
  await target.raw('alter table strangler_backfill add column if not exists source text');
}

/**
 * The database a checkpoint was taken from: its name and its cluster's system identifier, the same
 * however the server is reached (a port forward, a compose network, ::1 or 127.0.0.1). Where the
 * role may not read the identifier, the server's address stands in for it.
 */
async function sourceDatabase(source: Knex): Promise<string> {
  try {
    const { rows } = await source.raw<{ rows: Array<{ name: string }> }>(`select current_database() || ' (cluster ' || system_identifier || ')' as name from pg_control_system()`);
    return rows[0]!.name;
  } catch (err) {
    if ((err as { code?: unknown }).code !== '42501') throw err; // permission denied: fall back
    const { rows } = await source.raw<{ rows: Array<{ name: string }> }>(
      `select current_database() || coalesce(' on ' || host(inet_server_addr()) || ':' || inet_server_port(), '') as name`,
    );
    return rows[0]!.name;
  }
}

/**
 * Copies `spec`'s rows from the monolith into the service, from one consistent snapshot
 * (REPEATABLE READ, read only), in key order and batches, upserting only where the incoming
 * version is newer than what the service holds: events the service already applied are never
 * overwritten by older snapshot data.
 *
 * Hand-over to the event stream without a gap: the consumer's queue must be bound BEFORE the
 * snapshot is taken (the caller does that), so every change committed after the snapshot is
 * waiting in the queue, and the consumer's version rule applies exactly the newer ones.
 *
 * Resumable: after each batch the last key is checkpointed in the target database in the same
 * transaction as the batch's upsert. A re-run continues after it (with a new snapshot: rows
 * before the checkpoint that changed meanwhile arrive as events). A re-run after a backfill that
 * completed starts a new pass (rows whose version is higher than the service's are copied, those
 * a bulk load wrote without events say; the rest are skipped as up to date), and `restart: true` starts over whatever
 * the checkpoint says. A checkpoint records the source database it was taken from: resuming it
 * from another one would skip that database's rows below the checkpoint, so it is refused.
 */
export async function backfill(source: Knex, target: Knex, spec: SyncSpec, opts: BackfillOptions & { restart?: boolean } = {}): Promise<BackfillResult> {
  const batchSize = opts.batchSize ?? 1_000;
  await ensureCheckpointTable(target);
  const sourceName = await sourceDatabase(source);
  let checkpoint = await target('strangler_backfill').where({ spec: spec.name }).first<{ last_key: string | null; done: boolean; copied: number; source: string | null } | undefined>();
  if (checkpoint && !checkpoint.done && !opts.restart && checkpoint.source !== null && checkpoint.source !== sourceName) {
    throw new Error(
      `The ${spec.name} backfill into this service was interrupted while copying from database "${checkpoint.source}", not "${sourceName}": resuming it would skip the rows before its checkpoint. Check MONOLITH_DB, or pass --restart to copy "${sourceName}" from the start.`,
    );
  }
  if (opts.restart || checkpoint?.done) {
    await target('strangler_backfill').where({ spec: spec.name }).delete();
    checkpoint = undefined;
  }

  const columns = sourceSelect(spec);
  const targetColumns = [...new Set([spec.key, spec.version, ...spec.columns])];
  const updates = targetColumns.filter((c) => c !== spec.key).map((c) => `"${c}" = excluded."${c}"`).join(', ');
  const upsertSql = (n: number) =>
    `insert into "${spec.target.table}" (${targetColumns.map((c) => `"${c}"`).join(', ')}) values ${Array.from({ length: n }, () => `(${targetColumns.map(() => '?').join(', ')})`).join(', ')}
     on conflict ("${spec.key}") do update set ${updates} where "${spec.target.table}"."${spec.version}" < excluded."${spec.version}"`;

  const rowsPerStatement = Math.floor(MAX_PARAMETERS / targetColumns.length);
  let lastKey = checkpoint?.last_key ?? null;
  const resumedAfter = lastKey;
  let copied = 0;
  let skippedNewer = 0;

  const total = await source.transaction(
    async (snap) => {
      const where = (q: Knex.QueryBuilder) => {
        if (spec.source.where) q.whereRaw(spec.source.where);
        return q;
      };
      const counted = await snap.raw(`select count(*)::bigint as n from "${spec.source.table}"${spec.source.where ? ` where ${spec.source.where}` : ''}`);
      const totalRows = Number(counted.rows[0].n);
      let done = Number(checkpoint?.copied ?? 0);
      for (;;) {
        if (opts.signal?.aborted) break;
        const q = where(snap(spec.source.table).select(snap.raw(columns.join(', '))));
        if (lastKey !== null) q.where(spec.key, '>', lastKey);
        const rows = (await q.orderBy(spec.key).limit(batchSize)) as Record<string, unknown>[];
        if (!rows.length) {
          await saveCheckpoint(target, spec.name, sourceName, lastKey, true, done);
          break;
        }
        const values = rows.flatMap((r) => targetColumns.map((c) => toParam(r[c])));
        const nextKey = String(rows[rows.length - 1]![spec.key]);
        await target.transaction(async (trx) => {
          for (let i = 0; i < rows.length; i += rowsPerStatement) {
            const slice = rows.length <= rowsPerStatement ? values : values.slice(i * targetColumns.length, (i + rowsPerStatement) * targetColumns.length);
            const n = slice.length / targetColumns.length;
            const result = await trx.raw(upsertSql(n), slice as Knex.RawBinding[]);
            const written = result.rowCount ?? n;
            copied += written;
            skippedNewer += n - written;
          }
          await saveCheckpoint(trx, spec.name, sourceName, nextKey, false, done + rows.length);
        });
        lastKey = nextKey;
        done += rows.length;
        await opts.onProgress?.(done, totalRows);
        if (rows.length < batchSize) {
          await saveCheckpoint(target, spec.name, sourceName, lastKey, true, done);
          break;
        }
      }
      return totalRows;
    },
    { isolationLevel: 'repeatable read', readOnly: true },
  );
  return { spec: spec.name, total, copied, skippedNewer, resumedAfter };
}

function toParam(value: unknown): unknown {
  // JSON columns must be passed as JSON text; pg would send JS arrays as Postgres arrays.
  if (value !== null && typeof value === 'object' && !(value instanceof Date) && !Buffer.isBuffer(value)) return JSON.stringify(value);
  return value;
}

async function saveCheckpoint(db: Knex | Knex.Transaction, spec: string, source: string, lastKey: string | null, done: boolean, copied: number) {
  await db.raw(
    `insert into strangler_backfill (spec, source, last_key, done, copied, updated_at) values (?, ?, ?, ?, ?, now())
     on conflict (spec) do update set source = excluded.source, last_key = excluded.last_key, done = excluded.done, copied = excluded.copied, updated_at = now()`,
    [spec, source, lastKey, done, copied],
  );
}
