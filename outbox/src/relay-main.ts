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
  pgEnv,
} from '@strangler/platform';
import { createRelay } from './relay/relay.ts';
import { relayEnv, relayOptionsFromEnv, type RelayEnv } from './relay/config.ts';
import { registerRelayMetrics } from './relay/metrics.ts';
import { logRelayEvents } from './relay/logging.ts';

/**
 * `npm run relay -- --db <database>`: one relay per publishing database. Configuration comes
 * from the environment (PG*, DATABASE_URL, AMQP_URL, RELAY_*; see relay/config.ts). Serves
 * /healthz, /readyz and /metrics on RELAY_METRICS_PORT (default 9464), stops on SIGTERM.
 */
const usage = 'Usage: npm run relay -- --db <database>';
const { values } = parseArgs({ options: { db: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true });
if (values.help || !values.db) {
  console.error(values.help ? usage : `Missing --db.\n${usage}`);
  process.exit(values.help ? 0 : 2);
}
let database: string;
let env: RelayEnv;
try {
  database = assertIdentifier(values.db);
  env = loadConfig({ ...pgEnv, ...amqpEnv, ...relayEnv });
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}
const logger = createLogger('relay').child({ database });

const relay = createRelay(relayOptionsFromEnv(env, database));
logRelayEvents(relay.events, logger);
const registry = createRegistry({ service: 'relay', database });
registerRelayMetrics(relay, registry);

const app = express();
app.use(healthRoutes(relay.readinessChecks()));
app.get('/metrics', metricsHandler(registry));
const server = await listen(app, env.RELAY_METRICS_PORT, env.RELAY_METRICS_HOST);
logger.info({ url: server.url, instance: relay.instance }, 'relay metrics listening');
await relay.start();
onShutdown(logger, [() => relay.stop(), () => server.close(1_000)]);
