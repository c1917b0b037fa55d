import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { withTimeout } from '@strangler/platform';
import type { Relay } from './relay.ts';

/**
 * Prometheus metrics of a relay, fed by its lifecycle events; the lag and refused-rows gauges
 * query the outbox at scrape time (1 s bound each, so a down database does not hang the scrape;
 * NaN when the query failed).
 */
export function registerRelayMetrics(relay: Relay, registry: Registry): void {
  const registers = [registry];
  const published = new Counter({ name: 'strangler_relay_published_total', help: 'Outbox rows published and confirmed by the broker.', registers });
  const batches = new Counter({ name: 'strangler_relay_batches_total', help: 'Batches published.', registers });
  const rejected = new Counter({ name: 'strangler_relay_rejected_total', help: 'Rows refused (reason: unroutable, nacked, unencodable as AMQP, or refused by the broker); retried later.', labelNames: ['reason'], registers });
  const errors = new Counter({ name: 'strangler_relay_errors_total', help: 'Errors by component.', labelNames: ['component'], registers });
  const batchSeconds = new Histogram({
    name: 'strangler_relay_batch_duration_seconds',
    help: 'Publish-and-confirm time of a batch.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers,
  });
  const leader = new Gauge({ name: 'strangler_relay_leader', help: '1 while this relay holds the leader lease.', registers });
  const notifyMode = new Gauge({ name: 'strangler_relay_notify_mode', help: '1 while the leader waits for NOTIFY, 0 while it polls.', registers });
  // Read from the outbox at scrape time. On failure NaN, not 0 ("drained") nor the last value:
  // an alert on lag must not go quiet while the relay cannot read its outbox.
  const outboxGauge = (name: string, help: string, read: () => Promise<number>) =>
    new Gauge({
      name,
      help,
      registers,
      async collect() {
        try {
          this.set(await withTimeout(read(), 1_000, `${name} query timed out`));
        } catch {
          this.set(NaN);
          errors.inc({ component: 'metrics' });
        }
      },
    });
  outboxGauge('strangler_relay_lag_seconds', 'Age of the oldest unpublished outbox row, refused ones included (0 when drained).', () => relay.lagSeconds());
  outboxGauge('strangler_relay_refused_rows', 'Unpublished outbox rows refused at least once and waiting for a retry (strangler status lists them).', () => relay.refusedRows());
  new Gauge({
    name: 'strangler_relay_claim_floor_held_seconds',
    help: 'While leading: how long the claim floor has been held back by a transaction still open in the Postgres cluster (a long one with a transaction id, or a prepared one never finished); 0 when not held. Claims slow down meanwhile.',
    registers,
    collect() {
      this.set(relay.claimFloorHeldSeconds());
    },
  });
  leader.set(0);
  const ev = relay.events;
  ev.on('relay:batch:published', ({ count, durationMs }) => {
    published.inc(count);
    batches.inc();
    batchSeconds.observe(durationMs / 1_000);
  });
  ev.on('relay:publish:rejected', ({ kind }) => rejected.inc({ reason: kind }));
  ev.on('relay:batch:failed', () => errors.inc({ component: 'batch' }));
  ev.on('relay:db:error', () => errors.inc({ component: 'db' }));
  ev.on('relay:amqp:error', () => errors.inc({ component: 'amqp' }));
  ev.on('relay:listen:error', () => errors.inc({ component: 'listen' }));
  ev.on('relay:retention:error', () => errors.inc({ component: 'retention' }));
  ev.on('relay:leader:acquired', () => leader.set(1));
  ev.on('relay:leader:lost', () => leader.set(0));
  ev.on('relay:stopped', () => leader.set(0));
  ev.on('relay:mode', ({ mode }) => notifyMode.set(mode === 'notify' ? 1 : 0));
}
