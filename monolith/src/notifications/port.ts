import type { Knex } from 'knex';
import type { Channel } from './schemas.ts';

export interface NotificationRequest {
  userId: string;
  channel: Channel;
  template: string;
  data: Record<string, unknown>;
}

/**
 * The ONLY way other modules (orders today) ask for a notification: branch by abstraction.
 * Today's implementation is the in-process module (`InProcessNotificationPort`), chosen in
 * app.ts by NOTIFICATION_TRANSPORT; a gRPC client to the extracted notification service can be
 * swapped in there without touching a caller.
 *
 * `trx` is the caller's transaction. The in-process implementation writes the notification in
 * it, so the notification commits or rolls back with the order. A remote implementation cannot
 * join it: it must be idempotent on retry and decide what a rolled-back caller means (e.g.
 * send after commit, or through the outbox).
 */
export interface NotificationPort {
  send(trx: Knex.Transaction, request: NotificationRequest): Promise<{ id: string }>;
}
