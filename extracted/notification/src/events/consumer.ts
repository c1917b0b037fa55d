import type { Knex } from 'knex';
import { Counter } from 'prom-client';
import { connectAmqp, EVENTS_EXCHANGE, type Logger, type Registry } from '@strangler/platform';
import { consume, consumerQueues, type Consumer, type RetryPolicy } from '@strangler/outbox';
import { notificationEventHandler } from './handler.ts';
import { ORIGIN } from './publish.ts';

/** Default consumer name: queues `notification.events`, `notification.delay.<ms>ms`, `notification.dead`. */
export const NOTIFICATION_QUEUE = 'notification';

/** Every event type of the aggregates this service keeps in step (the version rule needs them all). */
export const NOTIFICATION_BINDINGS = ['user.*', 'notification.*'];

export interface QueueOptions {
  amqpUrl: string;
  /** Consumer name and queue base; default `notification` (tests: `${broker.prefix}.notification`). */
  queue?: string;
  /** Default `strangler.events`. */
  exchange?: string;
}

export interface NotificationConsumerOptions extends QueueOptions {
  /** Pool on the service's database; at least `concurrency` connections. */
  db: Knex;
  /** Transactions in parallel (default 4, the outbox library's). */
  concurrency?: number;
  /** Delay-queue retries before a message is parked (the outbox library's defaults: 8 attempts over ~2 minutes). */
  retry?: RetryPolicy;
  /** Apply the first version seen of an entity absent here instead of requiring version 1 (default false). */
  acceptFirstSeen?: boolean;
  logger?: Logger;
  /** Counts consumed events by outcome when given. */
  registry?: Registry;
}

/**
 * Declares the exchange and the consumer's durable `<queue>.events` queue with its bindings, and
 * returns WITHOUT consuming. Run it before a backfill takes its snapshot: every change committed
 * after the snapshot then waits in the queue, and the consumer's version rule applies exactly the
 * newer ones (no gap). Idempotent; the declarations match what `consume()` declares.
 */
export async function bindNotificationQueue({ amqpUrl, queue = NOTIFICATION_QUEUE, exchange = EVENTS_EXCHANGE }: QueueOptions): Promise<{ queue: string; bindings: string[] }> {
  const { events } = consumerQueues(queue);
  const conn = await connectAmqp(amqpUrl, `${queue}-bind`);
  try {
    const ch = await conn.createChannel();
    await ch.assertExchange(exchange, 'topic', { durable: true });
    await ch.assertQueue(events, { durable: true });
    for (const key of NOTIFICATION_BINDINGS) await ch.bindQueue(events, exchange, key);
    await ch.close();
  } finally {
    await conn.close().catch(() => {});
  }
  return { queue: events, bindings: NOTIFICATION_BINDINGS };
}

export interface NotificationConsumer {
  readonly consumer: Consumer;
  /** True while connected to the broker (the `/readyz` broker check). */
  connected(): boolean;
  stop(): Promise<void>;
}

/**
 * Consumes the monolith's `user.*` and `notification.*` events into this database (see
 * `notificationEventHandler`), ignoring this service's own echoes (origin `notification`).
 * Guarantees are the outbox consumer's: at most one effect per message (inbox), per-aggregate
 * version order (gaps go round the delay queues), poison messages parked in `<queue>.dead`.
 */
export async function startNotificationConsumer(options: NotificationConsumerOptions): Promise<NotificationConsumer> {
  const { db, amqpUrl, queue = NOTIFICATION_QUEUE, exchange = EVENTS_EXCHANGE, concurrency, retry, acceptFirstSeen, logger, registry } = options;
  const consumer = await consume({
    queue,
    bindings: NOTIFICATION_BINDINGS,
    handler: notificationEventHandler,
    db,
    amqpUrl,
    exchange,
    concurrency,
    retry,
    acceptFirstSeen,
    ignoreOrigin: ORIGIN,
    // The service's HTTP and gRPC APIs need only the database: they must not wait for the broker.
    connectInBackground: true,
  });
  const events = consumer.events;
  events.on('consumer:connected', () => logger?.info({ queue }, 'consumer connected'));
  events.on('consumer:connection:lost', ({ error }) => logger?.warn({ err: error, queue }, 'consumer lost its broker connection; reconnecting'));
  events.on('consumer:error', ({ component, error }) => logger?.warn({ err: error, component, queue }, 'consumer error'));
  events.on('consumer:message:retrying', (e) => logger?.info(e, 'event retrying'));
  events.on('consumer:message:parked', (e) => logger?.error(e, 'event parked: fix the cause, then replay it (strangler parked)'));
  if (registry) {
    const counter =
      (registry.getSingleMetric('notification_consumer_events_total') as Counter<'outcome'> | undefined) ??
      new Counter({ name: 'notification_consumer_events_total', help: 'Events consumed by outcome', labelNames: ['outcome'], registers: [registry] });
    events.on('consumer:batch:committed', ({ applied, duplicates, ignored }) => {
      counter.inc({ outcome: 'applied' }, applied.length);
      counter.inc({ outcome: 'duplicate' }, duplicates);
      counter.inc({ outcome: 'ignored' }, ignored);
    });
    events.on('consumer:message:retrying', () => counter.inc({ outcome: 'retrying' }));
    events.on('consumer:message:parked', () => counter.inc({ outcome: 'parked' }));
  }
  return {
    consumer,
    connected: () => consumer.connected,
    stop: () => consumer.stop(),
  };
}
