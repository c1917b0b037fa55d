import type { Knex } from 'knex';
import { consume, type Consumer, type RetryPolicy } from '@strangler/outbox';
import { ORIGIN } from '../shared/events.ts';
import { syncBindings, syncHandler, type SyncedEntity } from './apply-state.ts';
import { notificationSync } from './notification-sync.ts';

/** The consumer name and queue base of the monolith's sync consumer: `monolith-sync.events`, `.dead`, `.delay.<ms>ms`. */
export const MONOLITH_SYNC_QUEUE = 'monolith-sync';

/** Every entity an extracted service writes and the monolith copies back. The next extraction adds its own here. */
export const SYNCED_ENTITIES: SyncedEntity[] = [notificationSync];

export interface MonolithSyncOptions {
  /** Pool on the monolith database (holds the inbox and the entities); at least `concurrency` connections. */
  db: Knex;
  amqpUrl: string;
  /** Default `strangler.events`. */
  exchange?: string;
  /** Consumer name and queue base (default `monolith-sync`; tests use `<prefix>.monolith-sync`). */
  queue?: string;
  /** Default SYNCED_ENTITIES. */
  entities?: SyncedEntity[];
  /** Transactions in parallel (events of one entity always share one lane). Default 4. */
  concurrency?: number;
  /** Unacknowledged messages in flight. Default 200. */
  prefetch?: number;
  /** Delay-queue retries (version gaps, refused payloads) before a message is parked. */
  retry?: RetryPolicy;
  /** Resolve at once and connect to the broker in the background (see ConsumeOptions). Default false. */
  connectInBackground?: boolean;
}

/**
 * The monolith's sync consumer: applies the events of entities whose writer of record is an
 * extracted service to the monolith's tables, under the version rule, so the monolith holds
 * the same data and a route can be flipped back at any time.
 *
 * Invariants (from `consume()` and applyStateByVersion): each message takes effect at most once
 * (inbox); an entity's versions apply in order, duplicates and older versions are acknowledged
 * without effect, a gap waits in the delay queues for its predecessor; the monolith's own events
 * (origin `monolith`) are ignored; applying writes no outbox event and queues no delivery.
 * Failure modes: a lost broker or database connection is retried with backoff; a message that
 * keeps failing (gap never filled, payload that does not fit) is parked in `<queue>.dead`.
 */
export function startMonolithSync(options: MonolithSyncOptions): Promise<Consumer> {
  const entities = options.entities ?? SYNCED_ENTITIES;
  return consume({
    queue: options.queue ?? MONOLITH_SYNC_QUEUE,
    bindings: syncBindings(entities),
    handler: syncHandler(entities),
    db: options.db,
    amqpUrl: options.amqpUrl,
    exchange: options.exchange,
    concurrency: options.concurrency,
    prefetch: options.prefetch,
    retry: options.retry,
    ignoreOrigin: ORIGIN,
    connectInBackground: options.connectInBackground,
  });
}
