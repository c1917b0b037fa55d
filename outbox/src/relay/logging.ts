import type { Logger } from '@strangler/platform';
import type { RelayEvents } from './events.ts';
import { OUTBOX_XID_TRIGGER } from '../schema.ts';

// Refused rows are retried every minute for as long as their cause lasts, and thousands may wait
// (an event type nobody has bound a queue to yet): a line each would flood the log. The first
// refusal of a kind and event type is logged as it happens, the rest as one line per kind and
// event type every REFUSALS_SUMMARY_MS.
const REFUSALS_SUMMARY_MS = 60_000;

/** JSON logs for a relay's lifecycle events (per-batch events at debug level). */
export function logRelayEvents(events: RelayEvents, logger: Logger, { refusalsSummaryMs = REFUSALS_SUMMARY_MS } = {}): void {
  const refusals = new Map<string, { kind: string; eventType: string; count: number; reason: string }>();
  const seen = new Set<string>();
  const summarise = () => {
    for (const r of refusals.values()) logger.warn({ kind: r.kind, eventType: r.eventType, count: r.count, lastReason: r.reason }, 'broker refused events; they are retried (strangler status lists them)');
    refusals.clear();
  };
  const timer = setInterval(summarise, refusalsSummaryMs).unref();
  events.on('relay:publish:rejected', (e) => {
    const key = `${e.kind}\u0000${e.eventType}`;
    if (!seen.has(key)) {
      seen.add(key);
      logger.warn(e, 'broker refused an event; will retry');
      return;
    }
    const r = refusals.get(key);
    if (r) {
      r.count++;
      r.reason = e.reason;
    } else refusals.set(key, { kind: e.kind, eventType: e.eventType, count: 1, reason: e.reason });
  });
  events.on('relay:stopped', () => {
    clearInterval(timer);
    summarise();
  });
  events.on('relay:started', (e) => logger.info(e, 'relay started'));
  events.on('relay:stopped', (e) => logger.info(e, 'relay stopped'));
  events.on('relay:leader:acquired', (e) => logger.info(e, 'leader lease acquired'));
  events.on('relay:leader:lost', ({ instance, error }) => logger.warn({ instance, err: error }, 'leader lease lost'));
  events.on('relay:leader:waiting', (e) => logger.debug(e, 'waiting for the leader lease'));
  events.on('relay:listen:connected', () => logger.info('listening for outbox notifications'));
  events.on('relay:listen:reconnecting', (e) => logger.warn(e, 'listener reconnecting'));
  events.on('relay:listen:error', ({ error }) => logger.warn({ err: error }, 'listener error'));
  events.on('relay:amqp:connected', () => logger.info('connected to the broker'));
  events.on('relay:amqp:error', ({ error }) => logger.warn({ err: error }, 'broker error'));
  events.on('relay:amqp:blocked', (e) => logger.warn(e, 'broker blocked publishing'));
  events.on('relay:amqp:unblocked', () => logger.info('broker unblocked publishing'));
  events.on('relay:db:error', ({ error }) => logger.warn({ err: error }, 'database error'));
  events.on('relay:mode', (e) => logger.debug(e, 'wake-up mode'));
  events.on('relay:claim:floor', ({ enabled }) => {
    if (enabled) logger.debug('claims start above what is published (claim floor on)');
    else logger.warn(`the outbox's ${OUTBOX_XID_TRIGGER} trigger is missing or not enabled ALWAYS, or its seq sequence caches values: every claim steps over the rows published since the last VACUUM; run the migrations`);
  });
  events.on('relay:claim:floor:held', ({ seconds }) =>
    logger.warn(
      { seconds },
      `the claim floor has not risen for ${seconds} s: a transaction with a transaction id (it wrote, locked rows or asked for one) has been open at least that long in some database of this Postgres cluster, or a prepared one was never finished (see pg_stat_activity.backend_xid, pg_prepared_xacts); until it ends, each claim steps over every row published since`,
    ),
  );
  events.on('relay:batch:published', (e) => logger.debug(e, 'batch published'));
  events.on('relay:batch:failed', ({ count, error }) => logger.warn({ count, err: error }, 'batch failed; rows will be republished'));
  events.on('relay:retention:deleted', (e) => logger.info(e, 'deleted published rows past retention'));
  events.on('relay:retention:error', ({ error }) => logger.warn({ err: error }, 'retention failed'));
}
