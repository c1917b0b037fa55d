import type { Knex } from 'knex';
import type { Cursor } from '../shared/pagination.ts';
import { iso, isoOrNull } from '../shared/json.ts';
import type { Channel } from './schemas.ts';

export type NotificationStatus = 'queued' | 'sent' | 'failed';

export interface NotificationRow {
  id: string;
  user_id: string;
  channel: Channel;
  template: string;
  data: Record<string, unknown>;
  status: NotificationStatus;
  failure_reason: string | null;
  provider_message_id: string | null;
  version: number;
  created_at: Date;
  updated_at: Date;
  sent_at: Date | null;
}

/** The notification resource of the HTTP API (the contract the extracted service keeps). */
export interface Notification {
  id: string;
  userId: string;
  channel: Channel;
  template: string;
  data: Record<string, unknown>;
  status: NotificationStatus;
  /** Why delivery gave up; null unless status is `failed`. */
  failureReason: string | null;
  createdAt: string;
  updatedAt: string;
  /** When the provider accepted it; null unless status is `sent`. */
  sentAt: string | null;
}

/** Full stored state, as carried by notification events. */
export interface NotificationState extends Notification {
  providerMessageId: string | null;
  version: number;
}

export const toNotification = (r: NotificationRow): Notification => ({
  id: r.id,
  userId: r.user_id,
  channel: r.channel,
  template: r.template,
  data: r.data,
  status: r.status,
  failureReason: r.failure_reason,
  createdAt: iso(r.created_at),
  updatedAt: iso(r.updated_at),
  sentAt: isoOrNull(r.sent_at),
});

export const toNotificationState = (r: NotificationRow): NotificationState => ({ ...toNotification(r), providerMessageId: r.provider_message_id, version: r.version });

/** Inserts a queued notification (version 1) and its dispatch row. */
export async function insertQueued(trx: Knex.Transaction, row: Pick<NotificationRow, 'id' | 'user_id' | 'channel' | 'template' | 'data' | 'created_at'>): Promise<NotificationRow> {
  const [inserted] = await trx<NotificationRow>('notifications')
    .insert({ ...row, data: JSON.stringify(row.data) as never, status: 'queued', version: 1, updated_at: row.created_at })
    .returning('*');
  await trx('notification_dispatch').insert({ notification_id: row.id, attempts: 0, next_attempt_at: row.created_at });
  return inserted!;
}

export const findNotification = (db: Knex, id: string): Promise<NotificationRow | undefined> => db<NotificationRow>('notifications').where({ id }).first();

/** The user's notifications, newest first, after `cursor`; `limit + 1` rows to tell whether more follow. */
export function listNotifications(db: Knex, userId: string, limit: number, cursor?: Cursor): Promise<NotificationRow[]> {
  const q = db<NotificationRow>('notifications')
    .where({ user_id: userId })
    .orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }])
    .limit(limit + 1);
  if (cursor) q.whereRaw('(created_at, id) < (?::timestamptz, ?::uuid)', [cursor.createdAt, cursor.id]);
  return q;
}

export interface ClaimedNotification extends NotificationRow {
  attempts: number;
}

/**
 * Claims up to `limit` due deliveries for the rest of the caller's transaction. `FOR UPDATE OF
 * d SKIP LOCKED` locks only the dispatch rows and skips those another dispatcher holds; a row
 * whose holder committed meanwhile is deleted, so it is never claimed twice.
 */
export async function claimDue(trx: Knex.Transaction, limit: number, now: Date): Promise<ClaimedNotification[]> {
  const { rows } = await trx.raw<{ rows: ClaimedNotification[] }>(
    `select n.*, d.attempts
       from notification_dispatch d
       join notifications n on n.id = d.notification_id
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

export async function scheduleRetry(trx: Knex.Transaction, id: string, attempts: number, nextAttemptAt: Date, error: string): Promise<void> {
  await trx('notification_dispatch').where({ notification_id: id }).update({ attempts, next_attempt_at: nextAttemptAt, last_error: error });
}
