import path from 'node:path';
import { z } from 'zod';
import { ConfigError, loadConfig, repoRoot } from '@strangler/platform';
import type { RouteTableSpec } from '@strangler/facade';
import type { ProcessSpec } from './supervisor.ts';
import type { databases } from './databases.ts';
import { extractions } from './extractions/index.ts';

const PORT_RANGE = 'must be a port number from 1 to 65535';
const stackPort = (fallback: number) =>
  z.coerce
    .number({ error: PORT_RANGE })
    .int(PORT_RANGE)
    .min(1, 'must be a fixed port: 0 (any free one) would hide it from the route table and the monolith')
    .max(65535, PORT_RANGE)
    .default(fallback);

/**
 * The addresses of `npm start` (README "Quick start"), each overridable by environment. Every
 * process listens on HOST (default 127.0.0.1); the children get these as the variables they read
 * themselves (PORT, GRPC_PORT, RELAY_METRICS_PORT, ...), so a global RELAY_METRICS_PORT cannot
 * make the two relays collide.
 */
export const stackEnv = {
  FACADE_PORT: stackPort(8080),
  /** Read by the facade itself; its admin API is on only when STRANGLER_ADMIN_TOKEN is set. */
  FACADE_ADMIN_PORT: stackPort(8081),
  /** The facade's Prometheus metrics (on loopback; the client port never serves them). */
  FACADE_METRICS_PORT: stackPort(9466),
  MONOLITH_PORT: stackPort(3000),
  NOTIFICATION_PORT: stackPort(3104),
  NOTIFICATION_GRPC_PORT: stackPort(50054),
  /** /healthz, /readyz and /metrics of the relay of the monolith's outbox (9464: the usual exporter port). */
  MONOLITH_RELAY_METRICS_PORT: stackPort(9464),
  /** The same for the relay of the notification service's outbox. */
  NOTIFICATION_RELAY_METRICS_PORT: stackPort(9465),
  /** /healthz, /readyz and /metrics of the monolith's sync consumer (its own default). */
  SYNC_METRICS_PORT: stackPort(9470),
  /** The facade's route table (default facade/routes.yaml; relative paths are from the repository root). */
  FACADE_ROUTES: z.string().min(1).default('facade/routes.yaml'),
};

export type StackConfig = Readonly<z.infer<z.ZodObject<typeof stackEnv>>>;

/** Validates the stack's ports once: every problem in one ConfigError, including two processes given the same port. */
export function loadStackConfig(env: Record<string, string | undefined> = process.env): StackConfig {
  const config = loadConfig(stackEnv, env);
  const byPort = new Map<number, string[]>();
  for (const [key, value] of Object.entries(config)) if (typeof value === 'number') byPort.set(value, [...(byPort.get(value) ?? []), key]);
  const clashes = [...byPort].filter(([, keys]) => keys.length > 1).map(([p, keys]) => `${keys.join(' and ')} are all ${p}: give each process its own port.`);
  if (clashes.length) throw new ConfigError(clashes);
  return config;
}

/** Absolute path of the route table the facade of the stack loads. */
export const stackRoutesFile = (config: StackConfig): string => path.resolve(repoRoot, config.FACADE_ROUTES);

/**
 * The processes `npm start` runs. Each inherits the environment (Postgres, RabbitMQ, database
 * names, AUTH_TOKEN_SECRET, NOTIFICATION_TRANSPORT, LOG_LEVEL, ...) plus its own `env` below.
 *
 * - monolith: the legacy app. Its NotificationPort stays `in-process` unless
 *   NOTIFICATION_TRANSPORT=grpc; the gRPC target follows NOTIFICATION_GRPC_PORT.
 * - notification: HTTP edge, gRPC server, dispatcher, and its consumer of the monolith's events
 *   (queue `notification.events`), all in one process.
 * - relay:<db>: one outbox relay per publishing database, each with its own metrics port.
 * - monolith-sync: applies the service's events to the monolith's tables (flip-back safety).
 * - facade: in front of everything, with the route table of FACADE_ROUTES.
 *
 * No event depends on this order: `bindStackQueues` declares every consumer queue before any
 * process starts.
 */
export function stackProcesses(dbs: ReturnType<typeof databases>, config: StackConfig, env: Record<string, string | undefined> = {}): ProcessSpec[] {
  const s = String;
  return [
    {
      name: 'monolith',
      entry: 'monolith/src/main.ts',
      env: { PORT: s(config.MONOLITH_PORT), NOTIFICATION_GRPC_TARGET: env.NOTIFICATION_GRPC_TARGET || `127.0.0.1:${config.NOTIFICATION_GRPC_PORT}` },
    },
    { name: 'notification', entry: 'extracted/notification/src/main.ts', env: { PORT: s(config.NOTIFICATION_PORT), GRPC_PORT: s(config.NOTIFICATION_GRPC_PORT) } },
    { name: 'relay:monolith', entry: 'outbox/src/relay-main.ts', args: ['--db', dbs.monolith.name], env: { RELAY_METRICS_PORT: s(config.MONOLITH_RELAY_METRICS_PORT) } },
    { name: 'relay:notification', entry: 'outbox/src/relay-main.ts', args: ['--db', dbs.notification.name], env: { RELAY_METRICS_PORT: s(config.NOTIFICATION_RELAY_METRICS_PORT) } },
    { name: 'monolith-sync', entry: 'monolith/src/sync-main.ts', env: { SYNC_METRICS_PORT: s(config.SYNC_METRICS_PORT) } },
    { name: 'facade', entry: 'facade/src/main.ts', args: ['--port', s(config.FACADE_PORT), '--routes', stackRoutesFile(config), '--metrics-port', s(config.FACADE_METRICS_PORT)] },
  ];
}

/**
 * Declares and binds every consumer queue of the stack (each extraction's, then the monolith's
 * sync consumer's) before any relay publishes. A topic exchange delivers a message only to the
 * queues bound at that moment, and `mandatory` only catches a message no queue takes: without
 * this, the monolith's `notification.*` events published before the service's consumer first
 * connected would reach only `monolith-sync.events` and be lost to the service. The queues are
 * durable, so events published while a consumer is down (or the stack is stopped) wait for it.
 */
export async function bindStackQueues(env: Record<string, string | undefined>): Promise<string[]> {
  const bound: string[] = [];
  for (const extraction of Object.values(extractions)) if (extraction.prepare) bound.push(...(await extraction.prepare(env)));
  const { bindMonolithSyncQueueFromEnv } = await import('@strangler/monolith');
  bound.push((await bindMonolithSyncQueueFromEnv(env)).queue);
  return bound;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * Problems between the route table and the stack's ports: an upstream the stack runs (`monolith`,
 * `notification`) that the table sends to another loopback port. Such a table proxies to
 * whatever else listens there, so `npm start` refuses it and says what to change. Upstreams on
 * other hosts are the user's choice and left alone.
 */
export function routeTableProblems(table: Pick<RouteTableSpec, 'upstreams'>, config: StackConfig): string[] {
  const expected: Record<string, { port: number; key: keyof StackConfig }> = {
    monolith: { port: config.MONOLITH_PORT, key: 'MONOLITH_PORT' },
    notification: { port: config.NOTIFICATION_PORT, key: 'NOTIFICATION_PORT' },
  };
  const problems: string[] = [];
  for (const [name, want] of Object.entries(expected)) {
    const upstream = table.upstreams[name];
    if (!upstream) continue;
    const url = new URL(upstream.url);
    if (!LOOPBACK.has(url.hostname)) continue;
    const actual = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    if (actual !== want.port) {
      problems.push(
        `${config.FACADE_ROUTES} sends upstream "${name}" to ${upstream.url}, but ${want.key}=${want.port} puts the ${name} on port ${want.port}. ` +
          `Copy the table (mkdir -p .data && cp facade/routes.yaml .data/routes.yaml), set upstreams.${name}.url to http://127.0.0.1:${want.port}, and start with FACADE_ROUTES=.data/routes.yaml (flip with --routes .data/routes.yaml).`,
      );
    }
  }
  return problems;
}
