import { createDb, createLogger, ensureDatabase, listen, exitAfterFailedStart, migrateLatest, migrationsDir, onShutdown, pgConnection, startTracing } from '@strangler/platform';
import { createApp } from './app.ts';
import { loadMonolithConfig } from './config.ts';
import { FakePaymentProvider } from './payments/provider.ts';

// Wiring only: config, database (created and migrated if needed), app, listen, shutdown.
const logger = createLogger('monolith');
// The listener's setting, for a port in use (listenFailure); known once the config loaded.
let ports: Array<[number, string]> = [];
try {
  const config = loadMonolithConfig();
  ports = [[config.PORT, 'PORT (npm start: MONOLITH_PORT)']];
  const stopTracing = startTracing('monolith', logger);
  const connection = pgConnection(config, config.MONOLITH_DB);
  if (await ensureDatabase(connection, config.MONOLITH_DB)) logger.info({ database: config.MONOLITH_DB }, 'created database');
  const db = createDb(connection, { applicationName: 'monolith' });
  const applied = await migrateLatest(db, migrationsDir('monolith'));
  logger.info({ database: config.MONOLITH_DB, applied }, applied.length ? 'migrated' : 'schema up to date');

  const monolith = createApp({
    db,
    logger,
    auth: { secret: config.AUTH_TOKEN_SECRET, ttlSeconds: config.AUTH_TOKEN_TTL_SECONDS },
    payments: { provider: new FakePaymentProvider({ latencyMs: config.PAYMENT_PROVIDER_LATENCY_MS }), timeoutMs: config.PAYMENT_PROVIDER_TIMEOUT_MS },
    notifications: {
      transport: config.NOTIFICATION_TRANSPORT,
      grpc: {
        target: config.NOTIFICATION_GRPC_TARGET,
        deadlineMs: config.NOTIFICATION_GRPC_DEADLINE_MS,
        attempts: config.NOTIFICATION_GRPC_ATTEMPTS,
        breakerResetMs: config.NOTIFICATION_GRPC_BREAKER_RESET_MS,
        forwarder: {
          pollIntervalMs: config.NOTIFICATION_FORWARD_POLL_MS,
          batchSize: config.NOTIFICATION_FORWARD_BATCH_SIZE,
          retryBaseMs: config.NOTIFICATION_FORWARD_RETRY_BASE_MS,
          retryMaxMs: config.NOTIFICATION_FORWARD_RETRY_MAX_MS,
        },
      },
      dispatcher: { pollIntervalMs: config.NOTIFICATION_POLL_MS, maxAttempts: config.NOTIFICATION_MAX_ATTEMPTS },
    },
  });
  const server = await listen(monolith.app, config.PORT, config.HOST);
  monolith.dispatcher.start();
  monolith.forwarder.start();
  logger.info({ url: server.url, port: server.port, notificationTransport: config.NOTIFICATION_TRANSPORT }, 'listening');

  // Budget 10 s: stop accepting and drain requests (at most SHUTDOWN_GRACE_MS, 7 s) while the
  // dispatcher finishes its delivery in progress (at most 5 s) and the forwarder its batch in
  // flight (at most attempts x deadline + backoff, 5 s by default), then close the pool.
  onShutdown(logger, [
    () => Promise.all([server.close(config.SHUTDOWN_GRACE_MS), monolith.dispatcher.stop(), monolith.forwarder.close()]),
    () => db.destroy(),
    stopTracing,
  ]);
} catch (err) {
  exitAfterFailedStart(logger, err, ports, 'monolith');
}
