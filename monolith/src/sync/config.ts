import { z } from 'zod';
import { amqpEnv, databaseEnv, EVENTS_EXCHANGE, loadConfig, pgEnv, port } from '@strangler/platform';

/** Environment of `monolith/src/sync-main.ts`; every key has a default that runs locally. */
export const syncEnv = {
  ...pgEnv,
  ...amqpEnv,
  MONOLITH_DB: databaseEnv.MONOLITH_DB,
  /** The topic exchange the relays publish to. */
  SYNC_EXCHANGE: z.string().min(1).default(EVENTS_EXCHANGE),
  /** Prepended to the queue names (`<prefix>.monolith-sync.events`), e.g. a test's broker prefix. */
  SYNC_QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/, 'use letters, digits, "_" and "-" (the queue becomes <prefix>.monolith-sync.events)')
    .optional(),
  /** Transactions in parallel; the pool gets two more connections. */
  SYNC_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(4),
  SYNC_PREFETCH: z.coerce.number().int().min(1).max(10_000).default(200),
  /** Failed deliveries (e.g. a version gap that never fills) before a message is parked. */
  SYNC_RETRY_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(50).default(8),
  SYNC_RETRY_BASE_MS: z.coerce.number().int().min(10).max(600_000).default(1_000),
  SYNC_RETRY_MAX_MS: z.coerce.number().int().min(10).max(3_600_000).default(60_000),
  /** /healthz, /readyz and /metrics. 0 picks a free port (logged). */
  SYNC_METRICS_PORT: port(9470),
  SYNC_METRICS_HOST: z.string().min(1).default('127.0.0.1'),
};

export type SyncConfig = Readonly<z.infer<z.ZodObject<typeof syncEnv>>>;

export const loadSyncConfig = (env: Record<string, string | undefined> = process.env): SyncConfig => loadConfig(syncEnv, env);
