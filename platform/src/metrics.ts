import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Request, Response } from 'express';

export { Registry };

/** A registry per process (never the global one, so tests can build many apps in one process). */
export function createRegistry(labels: Record<string, string> = {}, { defaults = true } = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  if (defaults) collectDefaultMetrics({ register: registry });
  return registry;
}

export const metricsHandler = (registry: Registry) => async (_req: Request, res: Response) => {
  res.setHeader('content-type', registry.contentType);
  res.end(await registry.metrics());
};
