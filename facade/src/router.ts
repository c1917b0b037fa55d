import type { IncomingMessage } from 'node:http';
import { inCanary, stickyKey } from './canary.ts';
import type { CompiledRoute, RouteTable } from './routes/table.ts';
import type { UpstreamRuntime } from './upstreams.ts';

export type Side = 'serve' | 'canary' | 'default';

export interface Decision {
  side: Side;
  upstream: UpstreamRuntime;
  /** Where the request may go when `upstream` fails (subject to the effects rules), or null. */
  fallback: UpstreamRuntime | null;
  /** Mirror this request to the route's shadow candidate. */
  shadow: boolean;
}

/**
 * Picks who answers a request: the route's `serve` upstream, its canary (by cohort, or forced by
 * an admin), or the table's default for unmatched requests. The fallback is the upstream that
 * answered before the flip: `serve` for a canary request, otherwise the table default (the
 * monolith), and none when the chosen upstream already is that. Only requests served by `serve`
 * are shadowed, so a canary request never mirrors to itself.
 */
export function decide(table: RouteTable, route: CompiledRoute | null, req: IncomingMessage, forced: 'serve' | 'canary' | undefined): Decision {
  if (!route) return { side: 'default', upstream: table.fallback, fallback: null, shadow: false };
  const canary = route.canary;
  if (canary) {
    const useCanary = forced ? forced === 'canary' : inCanary(route.id, stickyKey(req, canary.stickyBy), canary.percent);
    if (useCanary) return { side: 'canary', upstream: canary.to, fallback: canary.to === route.serve ? null : route.serve, shadow: false };
  }
  const shadow = route.shadow !== null && (route.shadow.percent >= 100 || Math.random() * 100 < route.shadow.percent);
  return { side: 'serve', upstream: route.serve, fallback: route.serve === table.fallback ? null : table.fallback, shadow };
}
