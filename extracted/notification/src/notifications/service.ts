import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { Knex } from 'knex';
import { toPage, type Page, type PageQuery } from '@strangler/platform';
import { findNotification, insertQueued, listNotifications } from '../db/notifications.ts';
import { inTransaction, reading, type WorkOptions } from '../db/transaction.ts';
import { recordNotificationEvent } from '../events/publish.ts';
import { notificationErrors } from './errors.ts';
import { toNotification, toNotificationState, type Notification, type NotificationRow } from './resource.ts';
import type { CreateNotificationInput, SendNotificationInput } from './schemas.ts';

export interface SendResult {
  notification: Notification;
  /** False when the id existed: a retry, answered with the notification already queued. */
  created: boolean;
}

/**
 * Notifications: queueing (HTTP edge and gRPC) and reads. Delivery is the dispatcher's job.
 * Every write runs through `inTransaction`, so dry runs roll back; each write bumps the version
 * and appends exactly one event in the same transaction.
 */
export class NotificationService {
  constructor(private readonly db: Knex) {}

  /** POST /api/notifications: callers may only notify themselves; the service picks the id. */
  async create(callerId: string, input: CreateNotificationInput): Promise<Notification> {
    if (input.userId !== callerId) throw notificationErrors.NOTIFICATION_RECIPIENT_FORBIDDEN();
    const { notification } = await this.send({ ...input, id: randomUUID() });
    return notification;
  }

  /**
   * Queues a notification under the caller's `id`, idempotently: if it exists with the same
   * content, it is returned as it is now (no second event, no second dispatch row, so no second
   * delivery); with other content, NOTIFICATION_ID_CONFLICT.
   */
  async send(input: SendNotificationInput, opts: WorkOptions = {}): Promise<SendResult> {
    return inTransaction(
      this.db,
      async (trx) => {
        const row = await insertQueued(trx, {
          id: input.id,
          user_id: input.userId,
          channel: input.channel,
          template: input.template,
          data: input.data,
          created_at: new Date(),
        });
        if (row) {
          await recordNotificationEvent(trx, 'notification.queued', toNotificationState(row));
          return { notification: toNotification(row), created: true };
        }
        const existing = await findNotification(trx, input.id);
        if (!existing || !sameRequest(existing, input)) throw notificationErrors.NOTIFICATION_ID_CONFLICT(undefined, { id: input.id });
        return { notification: toNotification(existing), created: false };
      },
      opts,
    );
  }

  /** Another user's notification answers NOTIFICATION_NOT_FOUND, like an unknown one. */
  async get(callerId: string, id: string, opts: WorkOptions = {}): Promise<Notification> {
    const row = await reading(this.db, (q) => findNotification(q, id), opts);
    if (!row || row.user_id !== callerId) throw notificationErrors.NOTIFICATION_NOT_FOUND();
    return toNotification(row);
  }

  async list(callerId: string, page: PageQuery, opts: WorkOptions = {}): Promise<Page<Notification>> {
    const rows = await reading(this.db, (q) => listNotifications(q, callerId, page.limit, page.cursor), opts);
    return toPage(rows, page.limit, toNotification);
  }
}

function sameRequest(row: NotificationRow, input: SendNotificationInput): boolean {
  return row.user_id === input.userId && row.channel === input.channel && row.template === input.template && isDeepStrictEqual(row.data, input.data);
}
