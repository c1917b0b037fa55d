import express, { type Express } from 'express';
import type { Knex } from 'knex';
import {
  authEnv,
  createLogger,
  createRegistry,
  errorHandler,
  healthRoutes,
  jsonBody,
  metricsHandler,
  notFoundHandler,
  requestContext,
  type Logger,
  type Registry,
} from '@strangler/platform';
import { authenticate } from './shared/auth.ts';
import { observeRequests } from './shared/observability.ts';
import { userRoutes } from './users/routes.ts';
import { UserService, type AuthSettings } from './users/service.ts';
import { orderRoutes } from './orders/routes.ts';
import { OrderService } from './orders/service.ts';
import { paymentRoutes } from './payments/routes.ts';
import { PaymentService } from './payments/service.ts';
import { FakePaymentProvider, type PaymentProvider } from './payments/provider.ts';
import { notificationRoutes } from './notifications/routes.ts';
import { NotificationService } from './notifications/service.ts';
import { FakeNotificationProvider, type NotificationProvider } from './notifications/provider.ts';
import { NotificationDispatcher, type DispatcherOptions } from './notifications/dispatcher.ts';
import { InProcessNotificationPort } from './notifications/in-process-port.ts';
import type { NotificationPort } from './notifications/port.ts';
import type { NotificationForwarder } from './notifications/forwarder.ts';
import { createNotificationTransport, type GrpcTransportOptions, type NotificationTransport } from './notifications/transport.ts';

export interface AppDeps {
  /** Pool on the monolith database. The caller owns it (and destroys it after `dispatcher.stop()`). */
  db: Knex;
  /** Token signing; defaults to the platform `authEnv` defaults. */
  auth?: AuthSettings;
  logger?: Logger;
  /** Defaults to a new registry with process metrics. */
  registry?: Registry;
  /** Largest JSON body accepted (default 100kb); larger ones answer 413. */
  bodyLimit?: string;
  payments?: {
    /** Defaults to the deterministic FakePaymentProvider. */
    provider?: PaymentProvider;
    /** Provider call deadline in ms (default 3000). */
    timeoutMs?: number;
  };
  notifications?: {
    /** Defaults to the deterministic FakeNotificationProvider. */
    provider?: NotificationProvider;
    /**
     * How orders reach notifications (NOTIFICATION_TRANSPORT): `in-process` (default) or `grpc`
     * (queued in `notification_requests`, forwarded to the extracted service by `forwarder`).
     */
    transport?: NotificationTransport;
    /** Settings of the `grpc` transport. */
    grpc?: GrpcTransportOptions;
    /** Replaces the transport's port (tests), given the in-process port. */
    port?: (inProcess: NotificationPort) => NotificationPort;
    dispatcher?: DispatcherOptions;
  };
}

export interface Monolith {
  app: Express;
  /** Not started: main.ts starts it; tests call `runOnce()`/`drain()`. */
  dispatcher: NotificationDispatcher;
  /**
   * Forwards queued requests to the notification service: those of the `grpc` transport, and
   * with `in-process` whatever a `grpc` period left queued (transport.ts). Not started (main.ts
   * starts it; tests call `runOnce()`/`drain()` or `start()`); the owner calls `close()` to stop
   * it and close its gRPC client.
   */
  forwarder: NotificationForwarder;
  registry: Registry;
  paymentProvider: PaymentProvider;
  notificationProvider: NotificationProvider;
}

/** Builds the monolith (routes, modules, dispatcher) on `deps.db`; listens nowhere. */
export function createApp(deps: AppDeps): Monolith {
  const logger = deps.logger ?? createLogger('monolith');
  const registry = deps.registry ?? createRegistry({ service: 'monolith' });
  const auth = deps.auth ?? { secret: authEnv.AUTH_TOKEN_SECRET.parse(undefined), ttlSeconds: authEnv.AUTH_TOKEN_TTL_SECONDS.parse(undefined) };
  const paymentProvider = deps.payments?.provider ?? new FakePaymentProvider();
  const notificationProvider = deps.notifications?.provider ?? new FakeNotificationProvider();

  const notifications = new NotificationService(deps.db);
  const inProcess = new InProcessNotificationPort(notifications);
  const transport = createNotificationTransport({
    transport: deps.notifications?.transport ?? 'in-process',
    grpc: deps.notifications?.grpc,
    inProcess,
    db: deps.db,
    logger,
    registry,
  });
  const notificationPort = deps.notifications?.port ? deps.notifications.port(inProcess) : transport.port;
  const payments = new PaymentService(deps.db, paymentProvider, deps.payments?.timeoutMs ?? 3_000);
  const orders = new OrderService(deps.db, payments, notificationPort);
  const users = new UserService(deps.db, auth);
  const dispatcher = new NotificationDispatcher(deps.db, notificationProvider, logger, registry, deps.notifications?.dispatcher);
  const requireAuth = authenticate(auth.secret);

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(requestContext());
  app.use(observeRequests(logger, registry));
  app.use(healthRoutes({ database: () => deps.db.raw('select 1') }));
  app.get('/metrics', metricsHandler(registry));
  app.use(jsonBody(deps.bodyLimit));
  app.use(userRoutes(users, requireAuth));
  app.use(orderRoutes(orders, requireAuth));
  app.use(paymentRoutes(payments, requireAuth));
  app.use(notificationRoutes(notifications, requireAuth));
  app.use(notFoundHandler());
  app.use(errorHandler(logger));

  return { app, dispatcher, forwarder: transport.forwarder, registry, paymentProvider, notificationProvider };
}
