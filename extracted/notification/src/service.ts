import type { Express } from 'express';
import type { Knex } from 'knex';
import {
  bindGrpcServer,
  createLogger,
  createRegistry,
  listen,
  shutdownGrpcServer,
  type grpc,
  type Logger,
  type ReadinessCheck,
  type Registry,
  type RunningServer,
} from '@strangler/platform';
import { createApp } from './app.ts';
import { NotificationDispatcher, type DispatcherOptions } from './dispatch/dispatcher.ts';
import { FakeNotificationProvider, type NotificationProvider } from './dispatch/provider.ts';
import { startNotificationConsumer, type NotificationConsumer, type NotificationConsumerOptions } from './events/consumer.ts';
import { createGrpcServer } from './grpc/server.ts';
import { NotificationService } from './notifications/service.ts';

export interface NotificationServiceOptions {
  /** Pool on the service's database (migrated). The caller owns it and destroys it after `stop()`. */
  db: Knex;
  /** amqp:// URL of the broker the consumer reads from. */
  amqpUrl: string;
  /** Exchange the consumer binds to (default `strangler.events`). */
  exchange?: string;
  /** Consumer name and queue base (default `notification`). */
  queue?: string;
  /** Interface both servers listen on (default 127.0.0.1). */
  host?: string;
  /** HTTP edge port (default 3104; 0 picks a free one). */
  httpPort?: number;
  /** gRPC port (default 50054; 0 picks a free one). */
  grpcPort?: number;
  /** Secret of the shared bearer tokens (AUTH_TOKEN_SECRET). */
  authSecret?: string;
  logger?: Logger;
  registry?: Registry;
  /** Defaults to the FakeNotificationProvider logging to `db`. */
  provider?: NotificationProvider;
  /** The background dispatcher's options, or false to not start it (tests drive `dispatcher` by hand). */
  dispatcher?: DispatcherOptions | false;
  /** Consumer options, or false to run without consuming (no broker needed; /readyz then checks only the database). */
  consumer?: Pick<NotificationConsumerOptions, 'concurrency' | 'retry' | 'acceptFirstSeen'> | false;
  /** Most ms of database work one gRPC call may cause (default 5,000). */
  grpcMaxWorkMs?: number;
  /** How long `stop()` lets in-flight HTTP requests and gRPC calls finish (default 6,000 ms). */
  shutdownGraceMs?: number;
}

export interface RunningNotificationService {
  /** e.g. http://127.0.0.1:3104 */
  httpUrl: string;
  httpPort: number;
  /** host:port of the gRPC server, for `new Client(address, credentials)`. */
  grpcAddress: string;
  grpcPort: number;
  app: Express;
  grpcServer: grpc.Server;
  notifications: NotificationService;
  /** Always built; running in the background unless `dispatcher: false`. */
  dispatcher: NotificationDispatcher;
  provider: NotificationProvider;
  consumer: NotificationConsumer | null;
  registry: Registry;
  /**
   * Graceful stop: stops accepting, lets in-flight requests and calls finish (at most
   * `shutdownGraceMs`), while the dispatcher finishes its delivery in progress and the consumer
   * its transactions; then returns. Does not destroy `db`. Idempotent.
   */
  stop(): Promise<void>;
}

/**
 * Starts the whole service in this process: HTTP edge, gRPC server, dispatcher and consumer, on
 * a pool the caller owns. main.ts runs exactly this; tests and the lead's end-to-end suite can
 * run it in-process with port 0 and their own exchange and queue.
 */
export async function startNotificationService(options: NotificationServiceOptions): Promise<RunningNotificationService> {
  const { db, host = '127.0.0.1', shutdownGraceMs = 6_000 } = options;
  const logger = options.logger ?? createLogger('notification');
  const registry = options.registry ?? createRegistry({ service: 'notification' });
  const provider = options.provider ?? new FakeNotificationProvider(db);
  const notifications = new NotificationService(db);
  const dispatcher = new NotificationDispatcher(db, provider, logger, registry, options.dispatcher || {});

  const stops: Array<() => Promise<unknown>> = [];
  const stopAll = async () => {
    await Promise.allSettled(stops.splice(0).map((s) => s()));
  };
  try {
    let consumer: NotificationConsumer | null = null;
    if (options.consumer !== false) {
      consumer = await startNotificationConsumer({
        ...options.consumer,
        db,
        amqpUrl: options.amqpUrl,
        exchange: options.exchange,
        queue: options.queue,
        logger,
        registry,
      });
      stops.push(() => consumer!.stop());
    }
    const readiness: Record<string, ReadinessCheck> = {};
    if (consumer) {
      const c = consumer;
      readiness.broker = async () => {
        if (!c.connected()) throw new Error('not connected to RabbitMQ (the consumer is reconnecting)');
      };
    }
    const app = createApp({ db, logger, registry, authSecret: options.authSecret, notifications, readiness });

    const grpcServer = createGrpcServer(notifications, { maxWorkMs: options.grpcMaxWorkMs, logger });
    const grpcPort = await bindGrpcServer(grpcServer, options.grpcPort ?? 50054, host);
    stops.push(() => shutdownGrpcServer(grpcServer, shutdownGraceMs));

    const http: RunningServer = await listen(app, options.httpPort ?? 3104, host);
    stops.push(() => http.close(shutdownGraceMs));

    if (options.dispatcher !== false) {
      dispatcher.start();
      stops.push(() => dispatcher.stop());
    }

    let stopping: Promise<void> | undefined;
    return {
      httpUrl: http.url,
      httpPort: http.port,
      grpcAddress: `${host}:${grpcPort}`,
      grpcPort,
      app,
      grpcServer,
      notifications,
      dispatcher,
      provider,
      consumer,
      registry,
      stop: () => (stopping ??= stopAll()),
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
