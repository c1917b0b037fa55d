import { z } from 'zod';
import { amqpEnv, authEnv, databaseEnv, EVENTS_EXCHANGE, loadConfig, pgEnv, port } from '@strangler/platform';
import { NOTIFICATION_QUEUE } from './events/consumer.ts';

const ms = (fallback: number, max = 60_000) => z.coerce.number().int().min(0).max(max).default(fallback);
const name = z.string().regex(/^[A-Za-z0-9_.:-]{1,200}$/, 'use letters, digits, ".", "_", ":" or "-"');

/** Environment of the notification service process; every key has a default that runs locally. */
export const notificationEnv = {
  ...pgEnv,
  ...amqpEnv,
  AUTH_TOKEN_SECRET: authEnv.AUTH_TOKEN_SECRET,
  NOTIFICATION_SVC_DB: databaseEnv.NOTIFICATION_SVC_DB,
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: port(3104),
  GRPC_PORT: port(50054),
  /** The topic exchange events arrive on (default `strangler.events`; tests use their own). */
  EVENTS_EXCHANGE: name.default(EVENTS_EXCHANGE),
  /** The consumer's name and queue base (`<name>.events`, `<name>.dead`); also its inbox key. */
  NOTIFICATION_QUEUE: name.default(NOTIFICATION_QUEUE),
  NOTIFICATION_POLL_MS: ms(500),
  NOTIFICATION_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(100).default(5),
  /** Delay before the first delivery retry; doubles with each further one (capped at 60 s). */
  NOTIFICATION_RETRY_BASE_MS: ms(1_000),
  /** Simulated latency of the fake provider (0 in normal runs). */
  NOTIFICATION_PROVIDER_LATENCY_MS: ms(0),
  /** Most ms of database work one gRPC call may cause, even when its caller set no (or a longer) deadline. */
  GRPC_MAX_WORK_MS: ms(5_000).refine((v) => v > 0, 'must be at least 1'),
  /** How long SIGTERM waits for in-flight requests and calls before cutting them (the whole shutdown must fit in 10 s). */
  SHUTDOWN_GRACE_MS: ms(6_000, 8_000),
};

export type NotificationConfig = Readonly<z.infer<z.ZodObject<typeof notificationEnv>>>;

/** Validates the environment once (every problem in one ConfigError) and freezes it. */
export const loadNotificationConfig = (env: Record<string, string | undefined> = process.env): NotificationConfig => loadConfig(notificationEnv, env);
