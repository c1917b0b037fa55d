import type { Logger } from '@strangler/platform';
import type { RelayEvents } from './events.ts';

/** JSON logs for a relay's lifecycle events (per-batch events at debug level). */
export function logRelayEvents(events: RelayEvents, logger: Logger): void {
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
  events.on('relay:batch:published', (e) => logger.debug(e, 'batch published'));
  events.on('relay:batch:failed', ({ count, error }) => logger.warn({ count, err: error }, 'batch failed; rows will be republished'));
  events.on('relay:publish:rejected', (e) => logger.warn(e, 'broker refused an event; will retry'));
  events.on('relay:retention:deleted', (e) => logger.info(e, 'deleted published rows past retention'));
  events.on('relay:retention:error', ({ error }) => logger.warn({ err: error }, 'retention failed'));
}
