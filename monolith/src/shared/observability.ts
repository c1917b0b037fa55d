import type { RequestHandler } from 'express';
import { Counter, Histogram } from 'prom-client';
import type { Logger, Registry } from '@strangler/platform';

/**
 * Counts and times every request by method, route pattern and status, and writes one access
 * log line per request. Routes are labelled by their pattern (`/api/orders/:id`), never the raw
 * path, so label cardinality stays bounded; unmatched paths share the label `unmatched`.
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
    res.once('finish', () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const routePath: unknown = req.route?.path;
      const labels = { method: req.method, route: typeof routePath === 'string' ? routePath : 'unmatched', status: String(res.statusCode) };
      requests.inc(labels);
      duration.observe(labels, seconds);
      logger.info({ method: req.method, url: req.originalUrl, status: res.statusCode, ms: Math.round(seconds * 1000) }, 'request');
    });
    next();
  };
}
