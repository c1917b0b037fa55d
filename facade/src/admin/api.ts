import express, { type Express, type RequestHandler } from 'express';
import { z } from 'zod';
import { bearerToken, commonErrors, errorHandler, jsonBody, metricsHandler, notFoundHandler, validate } from '@strangler/platform';
import { facadeErrors } from '../errors.ts';
import type { Facade } from '../facade.ts';
import { RouteTableError } from '../routes/load.ts';
import { routePatchSchema } from '../routes/schema.ts';

const changeSchema = routePatchSchema.extend({
  why: z.string({ error: 'say why you change the route (it goes to the audit log)' }).trim().min(3, 'say why in a few words (at least 3 characters)').max(2000),
  who: z.string().trim().min(1).max(200).optional(),
});

const listQuery = z.object({
  route: z.string().optional(),
  limit: z.coerce.number({ error: 'must be a number from 1 to 1000' }).int().min(1, 'must be from 1 to 1000').max(1000, 'must be from 1 to 1000').default(100),
});

/**
 * The admin API, on its own port (loopback by default) and only when STRANGLER_ADMIN_TOKEN is
 * set. Every endpoint but /healthz, /readyz and /metrics requires `Authorization: Bearer
 * <token>`, compared in constant time. Route changes are merge patches validated like the file,
 * written back atomically and audited with who and why; `who` is what the caller says (one shared
 * token cannot tell people apart), so give it.
 *
 *   GET   /routes                 every route with live stats and breaker states
 *   GET   /routes/:id             one route
 *   PATCH /routes/:id             { serve?, effects?, match?, shadow?: {...}|null, canary?: {...}|null, why, who? }
 *   GET   /audit?route=&limit=    audit entries, newest first
 *   GET   /shadow/mismatches?route=&limit=
 *   POST  /reload                 re-read the route file now { why?, who? }
 */
export function createAdminApi(facade: Facade): Express {
  const app = express();
  app.disable('x-powered-by');
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', (_req, res) => {
    res.status(facade.isReady() ? 200 : 503).json({ status: facade.isReady() ? 'ready' : 'stopping', generation: facade.table().generation });
  });
  app.get('/metrics', metricsHandler(facade.metrics.registry));

  const requireToken: RequestHandler = (req, _res, next) => {
    const token = bearerToken(req.get('authorization'));
    if (!token) return next(commonErrors.UNAUTHENTICATED('Send the admin token as "Authorization: Bearer <STRANGLER_ADMIN_TOKEN>".'));
    if (!facade.checkAdminToken(token)) return next(commonErrors.UNAUTHENTICATED('The admin token is wrong; use the value of STRANGLER_ADMIN_TOKEN the facade was started with.'));
    next();
  };
  app.use(requireToken);

  app.get('/routes', async (_req, res) => {
    res.json({ generation: facade.table().generation, file: facade.routesFile, routes: await facade.routes() });
  });
  app.get('/routes/:id', async (req, res) => {
    const route = (await facade.routes()).find((r) => r.id === req.params.id);
    if (!route) throw facadeErrors.ROUTE_NOT_FOUND(`No route with id "${req.params.id}"; GET /routes lists them.`);
    res.json(route);
  });
  app.patch('/routes/:id', jsonBody(), async (req, res) => {
    const { why, who, ...patch } = validate(changeSchema, req.body);
    if (!Object.keys(patch).length) throw commonErrors.VALIDATION_FAILED('Nothing to change: send at least one of serve, effects, match, shadow, canary.', [{ field: '(body)', problem: 'no change given' }]);
    try {
      const result = await facade.changeRoute(String(req.params.id), patch, { who: who ?? req.get('x-strangler-actor') ?? 'admin-api', why });
      res.json(result);
    } catch (err) {
      if (err instanceof RouteTableError) throw facadeErrors.ROUTE_TABLE_INVALID('The change would make the route table invalid; nothing was changed.', err.problems);
      throw err;
    }
  });
  app.get('/audit', async (req, res) => {
    if (!facade.audit) return void res.json({ entries: [] });
    const q = validate(listQuery, req.query);
    res.json({ file: facade.audit.file, entries: await facade.audit.read({ routeId: q.route, limit: q.limit }) });
  });
  app.get('/shadow/mismatches', (req, res) => {
    const q = validate(listQuery, req.query);
    res.json({ mismatches: facade.mismatches({ routeId: q.route, limit: q.limit }) });
  });
  app.post('/reload', jsonBody(), async (req, res) => {
    const body = validate(z.object({ why: z.string().max(2000).optional(), who: z.string().max(200).optional() }).default({}), req.body ?? {});
    const result = await facade.reload({ source: 'api', who: body.who ?? 'admin-api', why: body.why ?? 'reload requested through the admin API' });
    res.status(result.status === 'invalid' ? 422 : 200).json(result);
  });

  app.use(notFoundHandler());
  app.use(errorHandler(facade.logger));
  return app;
}
