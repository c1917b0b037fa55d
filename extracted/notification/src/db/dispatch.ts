import type { Knex } from 'knex';
import type { NotificationRow } from '../notifications/resource.ts';

export interface ClaimedNotification extends NotificationRow {
  attempts: number;
  /** From the users projection; null while the user has not been synchronised yet. */
  recipient_email: string | null;
  recipient_name: string | null;
}

/**
 * Claims up to `limit` due deliveries for the rest of the caller's transaction. `FOR UPDATE OF
 * d SKIP LOCKED` locks only the dispatch rows and skips those another dispatcher holds; a row
 * whose holder committed meanwhile is deleted, so it is never claimed twice.
 */
export async function claimDue(trx: Knex.Transaction, limit: number, now: Date): Promise<ClaimedNotification[]> {
  const { rows } = await trx.raw<{ rows: ClaimedNotification[] }>(
    `select n.*, d.attempts, u.email as recipient_email, u.name as recipient_name
       from notification_dispatch d
       join notifications n on n.id = d.notification_id
       left join users u on u.id = n.user_id
      where d.next_attempt_at <= ?
      order by d.next_attempt_at, d.notification_id
      limit ?
        for update of d skip locked`,
    [now, limit],
  );
  return rows;
}

/** Ends delivery: removes the dispatch row and moves the entity to its final status (version + 1). */
export async function finish(
  trx: Knex.Transaction,
  id: string,
  outcome: { status: 'sent'; providerMessageId: string } | { status: 'failed'; reason: string },
  now: Date,
): Promise<NotificationRow> {
  await trx('notification_dispatch').where({ notification_id: id }).delete();
  const [row] = await trx<NotificationRow>('notifications')
    .where({ id })
    .update({
      status: outcome.status,
      ...(outcome.status === 'sent' ? { provider_message_id: outcome.providerMessageId, sent_at: now } : { failure_reason: outcome.reason }),
      updated_at: now,
      version: trx.raw('version + 1') as unknown as number,
    })
    .returning('*');
  return row!;
}

/** A failed attempt that will be retried: only the dispatch row changes (no version bump, no event). */
export async function scheduleRetry(trx: Knex.Transaction, id: string, attempts: number, nextAttemptAt: Date, error: string): Promise<void> {
  await trx('notification_dispatch').where({ notification_id: id }).update({ attempts, next_attempt_at: nextAttemptAt, last_error: error });
}
