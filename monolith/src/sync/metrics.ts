import { Counter, Gauge, Histogram } from 'prom-client';
import type { Consumer } from '@strangler/outbox';
import type { Logger, Registry } from '@strangler/platform';

export interface SyncStatus {
  /** True while the consumer consumes (for `/readyz`). */
  connected(): boolean;
}

/**
 * Metrics and logs of the sync consumer, hung off its lifecycle events:
 * `monolith_sync_applied_total{aggregate}`, `monolith_sync_skipped_total{reason}` (duplicate,
 * ignored), `monolith_sync_retries_total`, `monolith_sync_parked_total`,
 * `monolith_sync_errors_total{component}`, `monolith_sync_connected`, and
 * `monolith_sync_lag_seconds` (event written at the writer of record -> applied here).
 */
export function observeSync(consumer: Pick<Consumer, 'events' | 'connected'>, registry: Registry, logger: Logger): SyncStatus {
  const { events } = consumer;
  const applied = new Counter({ name: 'monolith_sync_applied_total', help: 'Events applied to the monolith tables', labelNames: ['aggregate'], registers: [registry] });
  const skipped = new Counter({ name: 'monolith_sync_skipped_total', help: 'Events acknowledged without effect: duplicate (or older version), ignored (own origin)', labelNames: ['reason'], registers: [registry] });
  const retries = new Counter({ name: 'monolith_sync_retries_total', help: 'Deliveries sent to a delay queue (version gap or failure)', registers: [registry] });
  const parked = new Counter({ name: 'monolith_sync_parked_total', help: 'Messages parked in the dead queue', registers: [registry] });
  const errors = new Counter({ name: 'monolith_sync_errors_total', help: 'Consumer errors by component', labelNames: ['component'], registers: [registry] });
  const lag = new Histogram({ name: 'monolith_sync_lag_seconds', help: 'From the event being written to it being applied here', buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600], registers: [registry] });
  new Gauge({
    name: 'monolith_sync_connected',
    help: '1 while the sync consumer is connected to the broker',
    registers: [registry],
    collect() {
      this.set(consumer.connected ? 1 : 0);
    },
  });
  events.on('consumer:connected', ({ queue }) => {
    logger.info({ queue }, 'sync consumer connected');
  });
  events.on('consumer:connection:lost', ({ queue, error }) => {
    logger.warn({ queue, err: error }, 'sync consumer lost its broker connection; reconnecting');
  });
  events.on('consumer:error', ({ component, error }) => {
    errors.inc({ component });
    logger.warn({ component, err: error }, 'sync consumer error');
  });
  events.on('consumer:batch:committed', ({ applied: list, duplicates, ignored }) => {
    const now = Date.now();
    for (const e of list) {
      applied.inc({ aggregate: e.aggregateType });
      const at = Date.parse(e.occurredAt);
      if (Number.isFinite(at)) lag.observe(Math.max(0, (now - at) / 1000));
    }
    if (duplicates) skipped.inc({ reason: 'duplicate' }, duplicates);
    if (ignored) skipped.inc({ reason: 'ignored' }, ignored);
  });
  events.on('consumer:message:retrying', ({ id, attempts, delayMs, error }) => {
    retries.inc();
    logger.info({ messageId: id, attempts, delayMs, error }, 'sync event retried later');
  });
  events.on('consumer:message:parked', ({ id, attempts, error }) => {
    parked.inc();
    logger.error({ messageId: id, attempts, error }, 'sync event parked');
  });
  return { connected: () => consumer.connected };
}
