import { listen, type RunningServer } from '@strangler/platform';
import { createAdminApi } from './admin/api.ts';
import type { Facade } from './facade.ts';

export interface ListenOptions {
  /** Client port (0 picks a free one). */
  port: number;
  /** Client interface (default 127.0.0.1; 0.0.0.0 to accept remote clients). */
  host?: string;
  /** Admin API port; the admin API only listens when the facade has an admin token. */
  adminPort?: number;
  /** Admin interface (default 127.0.0.1: keep it off the network). */
  adminHost?: string;
}

export interface RunningFacade {
  main: RunningServer;
  admin: RunningServer | null;
  /** Stops accepting, lets in-flight requests finish (at most `graceMs`), then closes the facade and the admin API. */
  close(graceMs?: number): Promise<void>;
}

/** Puts a facade on its ports: the client port (HTTP + WebSocket upgrades) and, if enabled, the admin port. */
export async function listenFacade(facade: Facade, o: ListenOptions): Promise<RunningFacade> {
  const main = await listen(facade.handler, o.port, o.host ?? '127.0.0.1');
  main.server.on('upgrade', facade.upgrade);
  let admin: RunningServer | null = null;
  try {
    if (facade.adminEnabled) admin = await listen(createAdminApi(facade), o.adminPort ?? 8081, o.adminHost ?? '127.0.0.1');
  } catch (err) {
    await main.close(0);
    throw err;
  }
  return {
    main,
    admin,
    async close(graceMs = 8_000) {
      facade.markStopping();
      await main.close(graceMs);
      await facade.close();
      await admin?.close(500);
    },
  };
}
