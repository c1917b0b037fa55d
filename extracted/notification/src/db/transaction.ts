import type { Knex } from 'knex';
import { currentContext } from '@strangler/platform';
import { notificationErrors } from '../notifications/errors.ts';

export interface WorkOptions {
  /**
   * Budget of the database work in ms, from now. Each statement runs under a Postgres
   * `statement_timeout` of this budget (a statement still running or waiting for a lock is
   * cancelled), and a write whose budget ran out before commit rolls back instead of committing
   * work its caller stopped waiting for; either way the answer is DEADLINE_EXCEEDED. Postgres 15
   * has no transaction-wide timeout (transaction_timeout is 17+), so a transaction of n statements
   * is bounded by n budgets at worst; ours have at most four and only the first can wait on a lock.
   * Unset: no bound beyond the server's.
   */
  timeoutMs?: number;
}

/**
 * Runs `fn` in a transaction. In a dry run (`x-strangler-dry-run: 1`, see platform
 * requestContext) the transaction is rolled back after `fn` returned: the caller gets the same
 * result as a real run, and nothing persists, no outbox event, no dispatch row (so no send).
 */
export async function inTransaction<T>(db: Knex, fn: (trx: Knex.Transaction) => Promise<T>, opts: WorkOptions = {}): Promise<T> {
  const dryRun = currentContext()?.dryRun === true;
  const rollback = new Error('dry run: rolled back on purpose');
  const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
  let result: T | undefined;
  try {
    const committed = await db.transaction(async (trx) => {
      if (opts.timeoutMs !== undefined) await boundWork(trx, opts.timeoutMs);
      result = await fn(trx);
      if (dryRun) throw rollback;
      if (Date.now() >= deadline) throw notificationErrors.DEADLINE_EXCEEDED();
      return result;
    });
    return committed;
  } catch (err) {
    if (err === rollback) return result as T;
    throw asDeadline(err);
  }
}

/** Runs reads in a read-only transaction bounded by `timeoutMs` (when given), or straight on the pool. */
export async function reading<T>(db: Knex, fn: (q: Knex) => Promise<T>, opts: WorkOptions = {}): Promise<T> {
  if (opts.timeoutMs === undefined) return fn(db);
  try {
    return await db.transaction(
      async (trx) => {
        await boundWork(trx, opts.timeoutMs!);
        return fn(trx);
      },
      { readOnly: true },
    );
  } catch (err) {
    throw asDeadline(err);
  }
}

async function boundWork(trx: Knex.Transaction, timeoutMs: number) {
  if (timeoutMs <= 0) throw notificationErrors.DEADLINE_EXCEEDED();
  await trx.raw(`select set_config('statement_timeout', ?, true)`, [String(Math.max(1, Math.floor(timeoutMs)))]);
}

/** 57014 query_canceled: the statement_timeout set above (or a cancel) stopped the work. */
function asDeadline(err: unknown): unknown {
  return (err as { code?: unknown } | null)?.code === '57014' ? notificationErrors.DEADLINE_EXCEEDED(undefined, undefined, { cause: err }) : err;
}
