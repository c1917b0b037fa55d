import { loadNotificationConfig } from '../config.ts';
import { bindNotificationQueue } from './consumer.ts';

/**
 * `bindNotificationQueue` configured from the environment (AMQP_URL, EVENTS_EXCHANGE,
 * NOTIFICATION_QUEUE, as the service reads them), for `strangler backfill` to run before its snapshot.
 */
export async function bindNotificationQueueFromEnv(env: Record<string, string | undefined> = process.env) {
  const config = loadNotificationConfig(env);
  return bindNotificationQueue({ amqpUrl: config.AMQP_URL, exchange: config.EVENTS_EXCHANGE, queue: config.NOTIFICATION_QUEUE });
}
