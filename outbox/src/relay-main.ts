import { parseArgs } from 'node:util';
import express from 'express';
import {
  amqpEnv,
  assertIdentifier,
  createLogger,
  createRegistry,
  healthRoutes,
  listen,
  loadConfig,
  metricsHandler,
  onShutdown,
  startTracing,
  pgEnv,
  type RunningServer,
} from '@strangler/platform';
import { createRelay, type RelayOptions } from './relay/relay.ts';
import { relayEnv, relayOptionsFromEnv, type RelayEnv } from './relay/config.ts';
import { registerRelayMetrics } from './relay/metrics.ts';
import { logRelayEvents } from './relay/logging.ts';
import { outboxProblem } from './relay/preflight.ts';

/**
 * `npm run relay -- --db <database>`: one relay per publishing database. Configuration comes
 * from the environment (PG*, DATABASE_URL, AMQP_URL, RELAY_*; see relay/config.ts). Serves
 * /healthz, /readyz and /metrics on RELAY_METRICS_PORT (default 9464), stops on SIGTERM.
 */
const usage = `Usage: npm run relay -- --db <database>

Publishes the outbox of <database> to RabbitMQ. One relay leads per database; start more for
failover. Configured by the environment: PG* or DATABASE_URL, AMQP_URL, and

  RELAY_EXCHANGE                  exchange published to (default strangler.events)
  RELAY_BATCH_SIZE                most rows claimed and published at once (default 500)
  RELAY_NOTIFY                    on: woken by LISTEN/NOTIFY, switched off by the relay itself
                                  above 100 events/s; off: polling only (default on)
  RELAY_POLL_INTERVAL_MS          poll interval when idle, a lost notification costs at most this
                                  (default 1000)
  RELAY_BUSY_POLL_MS              poll interval while busy, below the ramp (default 2)
  RELAY_BUSY_POLL_MAX_MS          poll interval above the ramp; larger batches, less CPU per
                                  event, more latency (default 100, or RELAY_BUSY_POLL_MS
                                  when that is higher)
  RELAY_BUSY_RAMP_FROM_PER_SEC    events/s where the busy poll starts to grow (default 600)
  RELAY_BUSY_RAMP_TO_PER_SEC      events/s where it reaches RELAY_BUSY_POLL_MAX_MS (default 1000).
                                  Set the ramp below the rate your producers reach when the
                                  database host is saturated, above the rates where latency counts
  RELAY_CONFIRM_TIMEOUT_MS        a batch not confirmed by the broker in this time is retried
                                  (default 10000)
  RELAY_FULL_SCAN_INTERVAL_MS     how often a claim starts from the oldest row instead of above
                                  what is published: a row set back to unpublished by hand is
                                  published within this time (default 60000)
  RELAY_CLAIM_FLOOR_HELD_WARN_MS  warn when a transaction left open holds claims back this long
                                  (default 60000; metric strangler_relay_claim_floor_held_seconds)
  RELAY_LEASE_RETRY_MS            how often a standby relay tries to take the lead (default 1000)
  RELAY_RETENTION_HOURS           published rows are deleted after this long (default 24)
  RELAY_RETENTION_INTERVAL_MS     how often retention runs (default 60000)
  RELAY_METRICS_PORT              /healthz, /readyz, /metrics (default 9464; 0 picks a free port)
  RELAY_METRICS_HOST              address they listen on (default 127.0.0.1)
  RELAY_INSTANCE                  this relay's name in logs and metrics (default host and pid)`;
let values: { db?: string; help?: boolean };
try {
  ({ values } = parseArgs({ options: { db: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
} catch (err) {
  console.error(`${(err as Error).message}\n${usage}`);
  process.exit(2);
}
if (values.help || !values.db) {
  console.error(values.help ? usage : `Missing --db.\n${usage}`);
  process.exit(values.help ? 0 : 2);
}
let database: string;
let env: RelayEnv;
let options: RelayOptions;
try {
  database = assertIdentifier(values.db);
  env = loadConfig({ ...pgEnv, ...amqpEnv, ...relayEnv });
  options = relayOptionsFromEnv(env, database);
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}
const logger = createLogger('relay').child({ database });
let stopTracing;
try {
  stopTracing = startTracing(`relay-${database}`, logger);
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}

const problem = await outboxProblem(options.connection, database);
if (problem) {
  console.error(problem);
  process.exit(2);
}

const relay = createRelay(options);
logRelayEvents(relay.events, logger);
const registry = createRegistry({ service: 'relay', database });
registerRelayMetrics(relay, registry);

let server: RunningServer | undefined;
onShutdown(logger, [() => relay.stop(), async () => server?.close(1_000), stopTracing]);

const app = express();
app.use(healthRoutes(relay.readinessChecks()));
app.get('/metrics', metricsHandler(registry));
try {
  server = await listen(app, env.RELAY_METRICS_PORT, env.RELAY_METRICS_HOST);
} catch (err) {
  const inUse = (err as { code?: unknown }).code === 'EADDRINUSE';
  console.error(
    `RELAY_METRICS_PORT="${env.RELAY_METRICS_PORT}": cannot listen on ${env.RELAY_METRICS_HOST}:${env.RELAY_METRICS_PORT}: ` +
      (inUse ? 'the port is in use (another relay on this host?). Give each relay its own port, or 0 for a free one.' : (err as Error).message),
  );
  process.exit(2);
}
logger.info({ url: server.url, instance: relay.instance }, 'relay metrics listening');
await relay.start();
