import { z } from 'zod';
import { EVENTS_EXCHANGE, MAX_TIMER_MS, pgConnection, port, type PgEnv } from '@strangler/platform';
import type { RelayOptions } from './relay.ts';

const msValue = (min = 1) => z.coerce.number().int().min(min).max(MAX_TIMER_MS, `at most ${MAX_TIMER_MS} ms (24.8 days), the longest timer Node.js can set`);
const ms = (fallback: number, min = 1) => msValue(min).default(fallback);

/** Environment of `npm run relay` (validated once by loadConfig, with pgEnv and amqpEnv). */
export const relayEnv = {
  RELAY_EXCHANGE: z.string().min(1).default(EVENTS_EXCHANGE),
  RELAY_BATCH_SIZE: z.coerce.number().int().min(1).max(10_000).default(500),
  RELAY_POLL_INTERVAL_MS: ms(1_000, 10),
  RELAY_BUSY_POLL_MS: ms(2),
  // Unset: 100, or RELAY_BUSY_POLL_MS where that is higher (createRelay).
  RELAY_BUSY_POLL_MAX_MS: msValue().optional(),
  RELAY_BUSY_RAMP_FROM_PER_SEC: z.coerce.number().int().min(0).default(600),
  RELAY_BUSY_RAMP_TO_PER_SEC: z.coerce.number().int().min(1).default(1_000),
  RELAY_NOTIFY: z.enum(['on', 'off'], { error: 'must be "on" or "off"' }).default('on'),
  RELAY_CONFIRM_TIMEOUT_MS: ms(10_000, 100),
  RELAY_FULL_SCAN_INTERVAL_MS: ms(60_000, 100),
  RELAY_CLAIM_FLOOR_HELD_WARN_MS: ms(60_000, 100),
  RELAY_LEASE_RETRY_MS: ms(1_000, 10),
  RELAY_RETENTION_HOURS: z.coerce.number().min(0).max(87_600, 'at most 87600 hours (10 years)').default(24),
  RELAY_RETENTION_INTERVAL_MS: ms(60_000, 100),
  /** 9464 is the usual Prometheus exporter port; give each relay (one per database) its own. 0 picks a free one. */
  RELAY_METRICS_PORT: port(9464),
  RELAY_METRICS_HOST: z.string().default('127.0.0.1'),
  RELAY_INSTANCE: z.string().optional(),
};

export type RelayEnv = Readonly<z.infer<z.ZodObject<typeof relayEnv>>> & PgEnv & { AMQP_URL: string };

/** Relay options from a loaded environment; throws a message naming the settings when they contradict each other. */
export function relayOptionsFromEnv(env: RelayEnv, database: string): RelayOptions {
  if (env.RELAY_BUSY_POLL_MAX_MS !== undefined && env.RELAY_BUSY_POLL_MAX_MS < env.RELAY_BUSY_POLL_MS) {
    throw new Error(
      `RELAY_BUSY_POLL_MAX_MS="${env.RELAY_BUSY_POLL_MAX_MS}": must be at least RELAY_BUSY_POLL_MS ("${env.RELAY_BUSY_POLL_MS}"); the busy poll grows from the one to the other as events arrive faster.`,
    );
  }
  if (env.RELAY_BUSY_RAMP_TO_PER_SEC <= env.RELAY_BUSY_RAMP_FROM_PER_SEC) {
    throw new Error(
      `RELAY_BUSY_RAMP_TO_PER_SEC="${env.RELAY_BUSY_RAMP_TO_PER_SEC}": must be above RELAY_BUSY_RAMP_FROM_PER_SEC ("${env.RELAY_BUSY_RAMP_FROM_PER_SEC}"); the busy poll grows from the one rate to the other.`,
    );
  }
  return {
    connection: pgConnection(env, database),
    amqpUrl: env.AMQP_URL,
    exchange: env.RELAY_EXCHANGE,
    batchSize: env.RELAY_BATCH_SIZE,
    pollIntervalMs: env.RELAY_POLL_INTERVAL_MS,
    busyPollMs: env.RELAY_BUSY_POLL_MS,
    busyPollMaxMs: env.RELAY_BUSY_POLL_MAX_MS,
    busyRampFromPerSec: env.RELAY_BUSY_RAMP_FROM_PER_SEC,
    busyRampToPerSec: env.RELAY_BUSY_RAMP_TO_PER_SEC,
    notify: env.RELAY_NOTIFY === 'on',
    confirmTimeoutMs: env.RELAY_CONFIRM_TIMEOUT_MS,
    fullScanIntervalMs: env.RELAY_FULL_SCAN_INTERVAL_MS,
    claimFloorHeldWarnMs: env.RELAY_CLAIM_FLOOR_HELD_WARN_MS,
    leaseRetryMs: env.RELAY_LEASE_RETRY_MS,
    retentionMs: Math.round(env.RELAY_RETENTION_HOURS * 3_600_000),
    retentionIntervalMs: env.RELAY_RETENTION_INTERVAL_MS,
    instance: env.RELAY_INSTANCE,
  };
}
