import type { Knex } from 'knex';
import type { Cursor } from '@strangler/platform';
import type { NotificationRow, NotificationState } from '../notifications/resource.ts';

type NewNotification = Pick<NotificationRow, 'id' | 'user_id' | 'channel' | 'template' | 'data' | 'created_at'>;

/**
 * Inserts a queued notification (version 1) and its dispatch row: this service is its writer of
 * record and delivers it. Returns undefined, inserting nothing, when the id exists already (a
 * concurrent insert of the same id is waited for, so a retry racing its original sees it).
 */
export async function insertQueued(trx: Knex.Transaction, row: NewNotification): Promise<NotificationRow | undefined> {
  const [inserted] = await trx<NotificationRow>('notifications')
    .insert({ ...row, data: JSON.stringify(row.data) as never, status: 'queued', version: 1, updated_at: row.created_at })
    .onConflict('id')
    .ignore()
    .returning('*');
  if (!inserted) return undefined;
  await trx('notification_dispatch').insert({ notification_id: row.id, attempts: 0, next_attempt_at: row.created_at });
  return inserted;
}

export const findNotification = (db: Knex, id: string): Promise<NotificationRow | undefined> => db<NotificationRow>('notifications').where({ id }).first();

/** The user's notifications, newest first, after `cursor`; `limit + 1` rows to tell whether more follow. */
export function listNotifications(db: Knex, userId: string, limit: number, cursor?: Cursor): Promise<NotificationRow[]> {
  const q = db<NotificationRow>('notifications')
    .where({ user_id: userId })
    .orderBy([
      { column: 'created_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ])
    .limit(limit + 1);
  if (cursor) q.whereRaw('(created_at, id) < (?::timestamptz, ?::uuid)', [cursor.createdAt, cursor.id]);
  return q;
}

export async function notificationVersion(trx: Knex.Transaction, id: string): Promise<number | null> {
  const row = await trx('notifications').where({ id }).first<{ version: number } | undefined>('version');
  return row ? row.version : null;
}

/**
 * Writes the full state another side published (the consumer decided it is the next version).
 * Never touches notification_dispatch: the other side is the writer of record and delivers.
 */
export async function applyNotificationState(trx: Knex.Transaction, s: NotificationState): Promise<void> {
  await trx.raw(
    `insert into notifications (id, user_id, channel, template, data, status, failure_reason, provider_message_id, version, created_at, updated_at, sent_at)
     values (?, ?, ?, ?, ?::jsonb, ?, ?, ?, ?, ?, ?, ?)
     on conflict (id) do update set
       user_id = excluded.user_id, channel = excluded.channel, template = excluded.template, data = excluded.data,
       status = excluded.status, failure_reason = excluded.failure_reason, provider_message_id = excluded.provider_message_id,
       version = excluded.version, created_at = excluded.created_at, updated_at = excluded.updated_at, sent_at = excluded.sent_at
     where notifications.version < excluded.version`,
    [s.id, s.userId, s.channel, s.template, JSON.stringify(s.data), s.status, s.failureReason, s.providerMessageId, s.version, s.createdAt, s.updatedAt, s.sentAt],
  );
}
