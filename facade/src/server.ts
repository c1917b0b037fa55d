import type { RequestListener } from 'node:http';
import { listen, type RunningServer } from '@strangler/platform';
import { createAdminApi } from './admin/api.ts';
import type { Facade } from './facade.ts';

export interface ListenOptions {
  /** Client port (0 picks a free one). */
  port: number;
  /** Client interface (default 127.0.0.1; 0.0.0.0 to accept remote clients). */
  host?: string;
  /** Admin API port; the admin API only listens when the facade has an admin token. It serves /metrics too. */
  adminPort?: number;
  /** Admin interface (default 127.0.0.1: keep it off the network). */
  adminHost?: string;
  /**
   * A port serving only GET /metrics (and /healthz), for a Prometheus scraper, whether the admin
   * API is on or off. Unset (or null): no such listener; metrics are then on the admin port only.
   */
  metricsPort?: number | null;
  /** Metrics interface (default 127.0.0.1: the series name every route and upstream). */
  metricsHost?: string;
}

export interface RunningFacade {
  main: RunningServer;
  admin: RunningServer | null;
  metrics: RunningServer | null;
  /** Stops accepting, lets in-flight requests finish (at most `graceMs`), then closes the facade, the admin API and the metrics listener. */
  close(graceMs?: number): Promise<void>;
}

/**
 * Puts a facade on its ports: the client port (HTTP + WebSocket upgrades; only healthz and
 * readyz of its own, which name no route or upstream), and, if enabled, the admin port and the
 * metrics port. Metrics name every route id and upstream, so they are never on the client port.
 */
export async function listenFacade(facade: Facade, o: ListenOptions): Promise<RunningFacade> {
  const main = await listen(facade.handler, o.port, o.host ?? '127.0.0.1');
  main.server.on('upgrade', facade.upgrade);
  let admin: RunningServer | null = null;
  let metrics: RunningServer | null = null;
  try {
    if (facade.adminEnabled) admin = await listen(createAdminApi(facade), o.adminPort ?? 8081, o.adminHost ?? '127.0.0.1');
    if (o.metricsPort !== undefined && o.metricsPort !== null) metrics = await listen(metricsListener(facade), o.metricsPort, o.metricsHost ?? '127.0.0.1');
  } catch (err) {
    await main.close(0);
    await admin?.close(0);
    throw err;
  }
  return {
    main,
    admin,
    metrics,
    async close(graceMs = 8_000) {
      facade.markStopping();
      // The server's close waits for WebSockets too, which may stay open for ever.
      const dropUpgraded = setTimeout(() => facade.closeUpgraded(), graceMs);
      await main.close(graceMs);
      clearTimeout(dropUpgraded);
      await facade.close();
      await Promise.all([admin?.close(500), metrics?.close(500)]);
    },
  };
}

/** GET /metrics (Prometheus text format) and /healthz; everything else 404. No token: bind it where only the scraper reaches. */
function metricsListener(facade: Facade): RequestListener {
  const registry = facade.metrics.registry;
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const json = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: { code: 'METHOD_NOT_ALLOWED', message: 'The metrics port only answers GET /metrics and GET /healthz.' } });
    if (path === '/healthz') return json(200, { status: 'ok' });
    if (path !== '/metrics') return json(404, { error: { code: 'ROUTE_NOT_FOUND', message: 'The metrics port only answers GET /metrics and GET /healthz.' } });
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        facade.logger.error({ err }, 'could not collect metrics');
        json(500, { error: { code: 'INTERNAL', message: 'Could not collect the metrics; see the facade log.' } });
      },
    );
  };
}
