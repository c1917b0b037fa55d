import type { Knex } from 'knex';
import type { Channel } from './schemas.ts';

/** A row of `notification_requests` (migrations/monolith/007): one Send still to make. */
export interface ForwardRequestRow {
  id: string;
  user_id: string;
  channel: Channel;
  template: string;
  data: Record<string, unknown>;
  status: 'pending' | 'failed';
  attempts: number;
  next_attempt_at: Date;
  last_error: string | null;
  request_id: string | null;
  traceparent: string | null;
  created_at: Date;
  failed_at: Date | null;
}

export type NewForwardRequest = Pick<ForwardRequestRow, 'id' | 'user_id' | 'channel' | 'template' | 'data' | 'request_id' | 'traceparent' | 'created_at'>;

/** Queues a request in the caller's transaction: it commits or rolls back with the caller's write. */
export async function enqueueRequest(trx: Knex.Transaction, row: NewForwardRequest): Promise<void> {
  await trx('notification_requests').insert({ ...row, data: JSON.stringify(row.data), status: 'pending', next_attempt_at: row.created_at });
}

/**
 * Claims up to `limit` due requests, oldest first, for the rest of the caller's transaction.
 * `SKIP LOCKED` lets several forwarders (one per monolith process) share the queue without
 * waiting on each other; a row another forwarder deleted meanwhile is simply not returned.
 */
export async function claimDueRequests(trx: Knex.Transaction, limit: number): Promise<ForwardRequestRow[]> {
  const { rows } = await trx.raw<{ rows: ForwardRequestRow[] }>(
    `select *
       from notification_requests
      where status = 'pending' and next_attempt_at <= now()
      order by next_attempt_at, created_at
      limit ?
        for update skip locked`,
    [limit],
  );
  return rows;
}

/** The service has the notification: the request is done. */
export async function deleteRequest(trx: Knex.Transaction, id: string): Promise<void> {
  await trx('notification_requests').where({ id }).delete();
}

/** The service refused the request (4xx): kept as `failed` with the error, never retried on its own. */
export async function markRequestFailed(trx: Knex.Transaction, id: string, attempts: number, error: string): Promise<void> {
  await trx('notification_requests').where({ id }).update({ status: 'failed', attempts, last_error: error, failed_at: trx.fn.now() });
}

/** A try that reached the network and failed: count it, keep the error, and maybe defer the row. */
export async function recordAttempt(trx: Knex.Transaction, id: string, attempts: number, error: string, deferMs: number): Promise<void> {
  await trx('notification_requests')
    .where({ id })
    .update({ attempts, last_error: error, ...(deferMs > 0 ? { next_attempt_at: trx.raw("now() + ? * interval '1 millisecond'", [deferMs]) } : {}) });
}

export interface ForwardQueueStats {
  pending: number;
  failed: number;
  /** Age of the oldest pending request in seconds (0 when none). */
  oldestPendingSeconds: number;
}

export async function forwardQueueStats(db: Knex): Promise<ForwardQueueStats> {
  const { rows } = await db.raw<{ rows: Array<{ pending: number; failed: number; oldest: number | null }> }>(
    `select count(*) filter (where status = 'pending')::int as pending,
            count(*) filter (where status = 'failed')::int as failed,
            extract(epoch from now() - min(created_at) filter (where status = 'pending'))::float8 as oldest
       from notification_requests`,
  );
  const r = rows[0]!;
  return { pending: r.pending, failed: r.failed, oldestPendingSeconds: Math.max(0, r.oldest ?? 0) };
}
