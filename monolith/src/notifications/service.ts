import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { recordEvent } from '../shared/events.ts';
import { toPage, type Page, type PageQuery } from '../shared/pagination.ts';
import { notificationErrors } from './errors.ts';
import type { NotificationRequest } from './port.ts';
import { findNotification, insertQueued, listNotifications, toNotification, toNotificationState, type Notification } from './repository.ts';

/** Notifications: queueing (HTTP and in-process callers) and reads. Delivery is the dispatcher's job. */
export class NotificationService {
  constructor(private readonly db: Knex) {}

  /** Queues a notification in `trx`: the entity (version 1), its dispatch row and `notification.queued`. */
  async queue(trx: Knex.Transaction, request: NotificationRequest): Promise<Notification> {
    const row = await insertQueued(trx, {
      id: randomUUID(),
      user_id: request.userId,
      channel: request.channel,
      template: request.template,
      data: request.data,
      created_at: new Date(),
    });
    await recordEvent(trx, 'notification', 'notification.queued', toNotificationState(row));
    return toNotification(row);
  }

  /** POST /api/notifications: callers may only notify themselves. */
  async create(callerId: string, request: NotificationRequest): Promise<Notification> {
    if (request.userId !== callerId) throw notificationErrors.NOTIFICATION_RECIPIENT_FORBIDDEN();
    return this.db.transaction((trx) => this.queue(trx, request));
  }

  /** Another user's notification answers NOTIFICATION_NOT_FOUND, like an unknown one. */
  async get(callerId: string, id: string): Promise<Notification> {
    const row = await findNotification(this.db, id);
    if (!row || row.user_id !== callerId) throw notificationErrors.NOTIFICATION_NOT_FOUND();
    return toNotification(row);
  }

  async list(callerId: string, page: PageQuery): Promise<Page<Notification>> {
    const rows = await listNotifications(this.db, callerId, page.limit, page.cursor);
    return toPage(rows, page.limit, toNotification);
  }
}
