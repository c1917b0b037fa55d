import { z } from 'zod';
import { authEnv, ConfigError, databaseEnv, loadConfig, pgEnv, port } from '@strangler/platform';
import { NOTIFICATION_TRANSPORTS } from './notifications/transport.ts';

const ms = (fallback: number, max = 60_000, min = 0) => z.coerce.number().int().min(min).max(max).default(fallback);

/** `host:port`, `[v6]:port`, or a scheme URI grpc-js resolves (dns:, ipv4:, ipv6:, unix:). */
const GRPC_TARGET = /^(?:(?:dns|ipv4|ipv6|unix|unix-abstract):\S+|(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5})$/;

/** Environment of the monolith process; every key has a default that runs locally. */
export const monolithEnv = {
  ...pgEnv,
  ...authEnv,
  MONOLITH_DB: databaseEnv.MONOLITH_DB,
  PORT: port(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  /** Deadline of a payment provider call; on expiry the request answers 504 PAYMENT_PROVIDER_TIMEOUT. */
  PAYMENT_PROVIDER_TIMEOUT_MS: ms(3_000).refine((v) => v > 0, 'must be at least 1'),
  /** Simulated latency of the fake payment provider (0 in normal runs). */
  PAYMENT_PROVIDER_LATENCY_MS: ms(0),
  /** How orders reach notifications (NotificationPort): the in-process module, or the extracted service over gRPC. */
  NOTIFICATION_TRANSPORT: z.enum(NOTIFICATION_TRANSPORTS, { error: `must be one of ${NOTIFICATION_TRANSPORTS.join(', ')}` }).default('in-process'),
  /** The notification service's gRPC address (NOTIFICATION_TRANSPORT=grpc, and requests such a period left queued under in-process). */
  NOTIFICATION_GRPC_TARGET: z
    .string()
    .regex(GRPC_TARGET, 'must be host:port (e.g. 127.0.0.1:50054) or a gRPC URI such as dns:///notification:50054')
    .default('127.0.0.1:50054'),
  /** Deadline of one Send attempt. */
  NOTIFICATION_GRPC_DEADLINE_MS: ms(1_000, 60_000, 1),
  /** Send attempts per forwarding try (the first included) on UNAVAILABLE / DEADLINE_EXCEEDED. */
  NOTIFICATION_GRPC_ATTEMPTS: z.coerce.number().int().min(1).max(10).default(3),
  /** How long the breaker stays open before one trial call. */
  NOTIFICATION_GRPC_BREAKER_RESET_MS: ms(5_000, 300_000, 100),
  /** Forwarder poll interval when idle (commits of this process wake it sooner). */
  NOTIFICATION_FORWARD_POLL_MS: ms(500, 60_000, 10),
  /** Requests forwarded per batch (their Sends run concurrently). */
  NOTIFICATION_FORWARD_BATCH_SIZE: z.coerce.number().int().min(1).max(500).default(20),
  /** Per-request retry delay after a deadline or 5xx: base, doubling up to the max. */
  NOTIFICATION_FORWARD_RETRY_BASE_MS: ms(1_000, 60_000, 1),
  NOTIFICATION_FORWARD_RETRY_MAX_MS: ms(30_000, 3_600_000, 1),
  NOTIFICATION_POLL_MS: ms(500),
  NOTIFICATION_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(100).default(5),
  /** How long SIGTERM waits for in-flight requests before closing their sockets (the whole shutdown must fit in 10 s). */
  SHUTDOWN_GRACE_MS: ms(7_000, 9_000),
};

export type MonolithConfig = Readonly<z.infer<z.ZodObject<typeof monolithEnv>>>;

/** Validates the environment once; every problem is reported in one ConfigError. */
export function loadMonolithConfig(env: Record<string, string | undefined> = process.env): MonolithConfig {
  const config = loadConfig(monolithEnv, env);
  const problems: string[] = [];
  if (config.NOTIFICATION_FORWARD_RETRY_MAX_MS < config.NOTIFICATION_FORWARD_RETRY_BASE_MS) {
    problems.push(`NOTIFICATION_FORWARD_RETRY_MAX_MS=${config.NOTIFICATION_FORWARD_RETRY_MAX_MS}: must be at least NOTIFICATION_FORWARD_RETRY_BASE_MS (${config.NOTIFICATION_FORWARD_RETRY_BASE_MS}).`);
  }
  // Worst case of one Send: every attempt runs to its deadline, plus up to 1 s of backoff between
  // attempts. It must fit the 10 s shutdown budget next to the HTTP drain, whatever the transport:
  // the forwarder also runs with in-process, for requests a grpc period left queued.
  const worstSendMs = config.NOTIFICATION_GRPC_ATTEMPTS * config.NOTIFICATION_GRPC_DEADLINE_MS + (config.NOTIFICATION_GRPC_ATTEMPTS - 1) * 1_000;
  if (worstSendMs > 9_000) {
    problems.push(
      `NOTIFICATION_GRPC_DEADLINE_MS=${config.NOTIFICATION_GRPC_DEADLINE_MS} with NOTIFICATION_GRPC_ATTEMPTS=${config.NOTIFICATION_GRPC_ATTEMPTS}: one Send could take ${worstSendMs} ms, more than the 9 s shutdown allows; lower either.`,
    );
  }
  if (problems.length) throw new ConfigError(problems);
  return config;
}
