import type { Knex } from 'knex';
import type { NotificationPort, NotificationRequest } from './port.ts';
import type { NotificationService } from './service.ts';

/** NotificationPort backed by the in-process module: queues in the caller's transaction. */
export class InProcessNotificationPort implements NotificationPort {
  constructor(private readonly notifications: NotificationService) {}

  async send(trx: Knex.Transaction, request: NotificationRequest): Promise<{ id: string }> {
    const { id } = await this.notifications.queue(trx, request);
    return { id };
  }
}
