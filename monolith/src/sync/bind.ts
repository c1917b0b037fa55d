import { connectAmqp, EVENTS_EXCHANGE } from '@strangler/platform';
import { consumerQueues } from '@strangler/outbox';
import { syncBindings, type SyncedEntity } from './apply-state.ts';
import { loadSyncConfig, type SyncConfig } from './config.ts';
import { MONOLITH_SYNC_QUEUE, SYNCED_ENTITIES } from './consumer.ts';

/** The sync consumer's name and queue base as configured: `[<SYNC_QUEUE_PREFIX>.]monolith-sync`. */
export const syncQueueName = (config: Pick<SyncConfig, 'SYNC_QUEUE_PREFIX'>): string =>
  config.SYNC_QUEUE_PREFIX ? `${config.SYNC_QUEUE_PREFIX}.${MONOLITH_SYNC_QUEUE}` : MONOLITH_SYNC_QUEUE;

/**
 * Declares the exchange and the sync consumer's durable `<queue>.events` with its bindings, and
 * returns WITHOUT consuming. Run it before a service's relay first publishes (`npm start` does):
 * a topic exchange drops a message for every queue not yet bound, and the service's queue, bound
 * to the same keys, keeps the relay's `mandatory` publish from noticing. Idempotent; the
 * declarations match what `consume()` declares.
 */
export async function bindMonolithSyncQueue({
  amqpUrl,
  exchange = EVENTS_EXCHANGE,
  queue = MONOLITH_SYNC_QUEUE,
  entities = SYNCED_ENTITIES,
}: {
  amqpUrl: string;
  exchange?: string;
  queue?: string;
  entities?: SyncedEntity[];
}): Promise<{ queue: string; bindings: string[] }> {
  const { events } = consumerQueues(queue);
  const bindings = syncBindings(entities);
  const conn = await connectAmqp(amqpUrl, `${queue}-bind`);
  try {
    const ch = await conn.createChannel();
    await ch.assertExchange(exchange, 'topic', { durable: true });
    await ch.assertQueue(events, { durable: true });
    for (const key of bindings) await ch.bindQueue(events, exchange, key);
    await ch.close();
  } finally {
    await conn.close().catch(() => {});
  }
  return { queue: events, bindings };
}

/** `bindMonolithSyncQueue` configured from the environment exactly as `sync-main.ts` reads it (AMQP_URL, SYNC_EXCHANGE, SYNC_QUEUE_PREFIX). */
export function bindMonolithSyncQueueFromEnv(env: Record<string, string | undefined> = process.env) {
  const config = loadSyncConfig(env);
  return bindMonolithSyncQueue({ amqpUrl: config.AMQP_URL, exchange: config.SYNC_EXCHANGE, queue: syncQueueName(config) });
}
