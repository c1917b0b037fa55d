import type { RequestHandler } from 'express';
import { Counter, Histogram } from 'prom-client';
import { currentContext, runWithContext, type Logger, type Registry } from '@strangler/platform';

/**
 * Counts and times every request by method, route pattern and status (the monolith's metric
 * names, so dashboards work for both), and writes one JSON access log line per request carrying
 * its request and trace ids. Routes are labelled by pattern, never the raw path; unmatched paths
 * share the label `unmatched`.
 */
export function observeRequests(logger: Logger, registry: Registry): RequestHandler {
  const labelNames = ['method', 'route', 'status'] as const;
  const requests = new Counter({ name: 'http_requests_total', help: 'HTTP requests served', labelNames, registers: [registry] });
  const duration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request duration',
    labelNames,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  return (req, res, next) => {
    const start = process.hrtime.bigint();
    const ctx = currentContext();
    res.once('finish', () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const routePath: unknown = req.route?.path;
      const labels = { method: req.method, route: typeof routePath === 'string' ? routePath : 'unmatched', status: String(res.statusCode) };
      requests.inc(labels);
      duration.observe(labels, seconds);
      const line = () => logger.info({ method: req.method, url: req.originalUrl, status: res.statusCode, ms: Math.round(seconds * 1000), dryRun: ctx?.dryRun || undefined }, 'request');
      // 'finish' fires outside the request's async context: log inside it again so the line carries its ids.
      if (ctx) runWithContext(ctx, line);
      else line();
    });
    next();
  };
}
