import { createDb, createLogger, ensureDatabase, exitAfterFailedStart, migrateLatest, migrationsDir, onShutdown, pgConnection, startTracing } from '@strangler/platform';
import { loadNotificationConfig } from './config.ts';
import { FakeNotificationProvider } from './dispatch/provider.ts';
import { startNotificationService } from './service.ts';

// Wiring only: config, database (created and migrated if needed), the service, shutdown.
// Its outbox relay is a separate process: `npm run relay -- --db notification_svc`.
const logger = createLogger('notification');
// The listeners' settings, for a port in use (listenFailure); known once the config loaded.
let ports: Array<[number, string]> = [];
try {
  const config = loadNotificationConfig();
  ports = [
    [config.PORT, 'PORT (npm start: NOTIFICATION_PORT)'],
    [config.GRPC_PORT, 'GRPC_PORT (npm start: NOTIFICATION_GRPC_PORT)'],
  ];
  const stopTracing = startTracing('notification', logger);
  const connection = pgConnection(config, config.NOTIFICATION_SVC_DB);
  if (await ensureDatabase(connection, config.NOTIFICATION_SVC_DB)) logger.info({ database: config.NOTIFICATION_SVC_DB }, 'created database');
  const db = createDb(connection, { applicationName: 'notification' });
  const applied = await migrateLatest(db, migrationsDir('notification'));
  logger.info({ database: config.NOTIFICATION_SVC_DB, applied }, applied.length ? 'migrated' : 'schema up to date');

  const service = await startNotificationService({
    db,
    logger,
    amqpUrl: config.AMQP_URL,
    exchange: config.EVENTS_EXCHANGE,
    queue: config.NOTIFICATION_QUEUE,
    host: config.HOST,
    httpPort: config.PORT,
    grpcPort: config.GRPC_PORT,
    authSecret: config.AUTH_TOKEN_SECRET,
    provider: new FakeNotificationProvider(db, { latencyMs: config.NOTIFICATION_PROVIDER_LATENCY_MS }),
    dispatcher: { pollIntervalMs: config.NOTIFICATION_POLL_MS, maxAttempts: config.NOTIFICATION_MAX_ATTEMPTS, retryBaseMs: config.NOTIFICATION_RETRY_BASE_MS },
    grpcMaxWorkMs: config.GRPC_MAX_WORK_MS,
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
  });
  logger.info({ url: service.httpUrl, port: service.httpPort, grpc: service.grpcAddress, grpcPort: service.grpcPort }, 'listening');

  // Budget 10 s: HTTP and gRPC drain (at most SHUTDOWN_GRACE_MS, 6 s) while the dispatcher
  // finishes its delivery in progress (at most 5 s) and the consumer its transactions (~5 s,
  // then 2 s to close channels); then the pool closes.
  onShutdown(logger, [() => service.stop(), () => db.destroy(), stopTracing]);
} catch (err) {
  exitAfterFailedStart(logger, err, ports, 'notification service');
}
