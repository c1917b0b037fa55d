import { loadConfig } from '@strangler/platform';
import type { Extraction } from './index.ts';

/**
 * The notification service owns notifications and keeps a projection of users (id, email,
 * name) to address them. Both are copied from the monolith and kept in step by events.
 */
export const notification: Extraction = {
  service: 'notification',
  database: (dbs) => dbs.notification,
  // The service's consumer of monolith events, and the monolith's consumer of the service's,
  // named as the processes name them (NOTIFICATION_QUEUE, SYNC_QUEUE_PREFIX).
  // Loaded on demand, like prepare's: the CLI's other commands do not need these packages.
  async consumers(env) {
    const [{ notificationEnv }, { syncEnv, syncQueueName }] = await Promise.all([import('@strangler/notification'), import('@strangler/monolith')]);
    const { NOTIFICATION_QUEUE } = loadConfig({ NOTIFICATION_QUEUE: notificationEnv.NOTIFICATION_QUEUE }, env);
    return [NOTIFICATION_QUEUE, syncQueueName(loadConfig({ SYNC_QUEUE_PREFIX: syncEnv.SYNC_QUEUE_PREFIX }, env))];
  },
  // Binds `notification.events` (AMQP_URL, EVENTS_EXCHANGE, NOTIFICATION_QUEUE as the service reads
  // them) before the snapshot, so every change committed after it waits in the queue.
  async prepare(env) {
    const { bindNotificationQueueFromEnv } = await import('@strangler/notification');
    return [(await bindNotificationQueueFromEnv(env)).queue];
  },
  specs: [
    {
      name: 'users',
      source: { table: 'users' },
      target: { table: 'users' },
      key: 'id',
      version: 'version',
      columns: ['email', 'name', 'created_at', 'updated_at'],
    },
    {
      name: 'notifications',
      source: { table: 'notifications' },
      target: { table: 'notifications' },
      key: 'id',
      version: 'version',
      columns: ['user_id', 'channel', 'template', 'data', 'status', 'failure_reason', 'provider_message_id', 'created_at', 'updated_at', 'sent_at'],
    },
  ],
};
