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
  type ReadinessCheck,
  type Registry,
} from '@strangler/platform';
import { authenticate } from './http/auth.ts';
import { observeRequests } from './http/observability.ts';
import { notificationRoutes } from './http/routes.ts';
import { NotificationService } from './notifications/service.ts';

export interface AppDeps {
  /** Pool on the service's database (notification_svc). The caller owns it. */
  db: Knex;
  /** Secret of the shared bearer tokens (AUTH_TOKEN_SECRET); defaults to the platform default. */
  authSecret?: string;
  logger?: Logger;
  /** Defaults to a new registry with process metrics. */
  registry?: Registry;
  /** Largest JSON body accepted (default 100kb, as the monolith); larger ones answer 413. */
  bodyLimit?: string;
  /** `/readyz` checks besides the database, e.g. `{ broker: ... }`. */
  readiness?: Record<string, ReadinessCheck>;
  /** Defaults to a NotificationService on `db`. */
  notifications?: NotificationService;
}

/**
 * The service's HTTP edge: the monolith's notification endpoints with the same statuses, bodies
 * and error codes, plus /healthz, /readyz and /metrics. Listens nowhere (see `listen`).
 */
export function createApp(deps: AppDeps): Express {
  const logger = deps.logger ?? createLogger('notification');
  const registry = deps.registry ?? createRegistry({ service: 'notification' });
  const notifications = deps.notifications ?? new NotificationService(deps.db);
  const requireAuth = authenticate(deps.authSecret ?? authEnv.AUTH_TOKEN_SECRET.parse(undefined));

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(requestContext());
  app.use(observeRequests(logger, registry));
  app.use(healthRoutes({ database: () => deps.db.raw('select 1'), ...deps.readiness }));
  app.get('/metrics', metricsHandler(registry));
  app.use(jsonBody(deps.bodyLimit));
  app.use(notificationRoutes(notifications, requireAuth));
  app.use(notFoundHandler());
  app.use(errorHandler(logger));
  return app;
}
