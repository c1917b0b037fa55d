import express from 'express';
import { createDb, createLogger, createRegistry, healthRoutes, listen, exitAfterFailedStart, metricsHandler, onShutdown, pgConnection, startTracing } from '@strangler/platform';
import { loadSyncConfig } from './sync/config.ts';
import { syncQueueName } from './sync/bind.ts';
import { startMonolithSync } from './sync/consumer.ts';
import { observeSync } from './sync/metrics.ts';

// Wiring only: config, database, the sync consumer, /healthz /readyz /metrics, shutdown.
const logger = createLogger('monolith-sync');
// The listener's setting, for a port in use (listenFailure); known once the config loaded.
let ports: Array<[number, string]> = [];
try {
  const config = loadSyncConfig();
  ports = [[config.SYNC_METRICS_PORT, 'SYNC_METRICS_PORT']];
  const stopTracing = startTracing('monolith-sync', logger);
  const db = createDb(pgConnection(config, config.MONOLITH_DB), { applicationName: 'monolith-sync', pool: { max: config.SYNC_CONCURRENCY + 2 } });
  const { rows } = await db.raw<{ rows: Array<{ ready: boolean }> }>("select to_regclass('inbox') is not null and to_regclass('notifications') is not null as ready");
  if (!rows[0]?.ready) {
    throw new Error(`Database "${config.MONOLITH_DB}" has no inbox/notifications tables: start the monolith once (it migrates its database) or run \`npm run migrate\`, then start the sync consumer.`);
  }
  const queue = syncQueueName(config);
  const consumer = await startMonolithSync({
    db,
    amqpUrl: config.AMQP_URL,
    exchange: config.SYNC_EXCHANGE,
    queue,
    concurrency: config.SYNC_CONCURRENCY,
    prefetch: config.SYNC_PREFETCH,
    retry: { maxAttempts: config.SYNC_RETRY_MAX_ATTEMPTS, baseMs: config.SYNC_RETRY_BASE_MS, maxMs: config.SYNC_RETRY_MAX_MS },
    // Up and reporting on /readyz while the broker is down, rather than exiting (and being
    // restarted in a loop by a supervisor).
    connectInBackground: true,
  });
  const registry = createRegistry({ service: 'monolith-sync' });
  const status = observeSync(consumer, registry, logger);

  const app = express();
  app.disable('x-powered-by');
  app.use(
    healthRoutes({
      database: () => db.raw('select 1'),
      broker: async () => {
        if (!status.connected()) throw new Error('not connected to the broker (reconnecting)');
      },
    }),
  );
  app.get('/metrics', metricsHandler(registry));
  const server = await listen(app, config.SYNC_METRICS_PORT, config.SYNC_METRICS_HOST);
  logger.info({ url: server.url, port: server.port, queue, exchange: config.SYNC_EXCHANGE }, 'listening');

  // Budget 10 s: the consumer finishes its transactions in flight (at most ~5 s) and closes its
  // channels (at most 2 s) while the metrics server closes; then the pool.
  onShutdown(logger, [() => Promise.all([consumer.stop(), server.close(1_000)]), () => db.destroy(), stopTracing]);
} catch (err) {
  exitAfterFailedStart(logger, err, ports, 'monolith sync consumer');
}
