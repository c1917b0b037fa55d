import { fetchRoutes, formatRoutes, readRoutesFile } from '@strangler/facade';
import { UsageError, type Command } from '../cli.ts';

export const command: Command = {
  summary: "list the facade's routes with live stats (requests, 5xx, latency, canary share, shadow mismatches, breakers)",
  usage: 'npm run strangler -- routes [--json] [--routes <file>]   (live stats from the admin API at STRANGLER_ADMIN_URL with STRANGLER_ADMIN_TOKEN; --routes reads the file instead, without stats)',
  options: {
    json: { type: 'boolean' },
    routes: { type: 'string' },
  },
  async run({ positionals, values }) {
    if (positionals.length) throw new UsageError(`Unexpected argument(s): ${positionals.join(' ')}.`);
    const routes = values.routes
      ? await readRoutesFile(values.routes as string)
      : await fetchRoutes({ adminUrl: process.env.STRANGLER_ADMIN_URL || 'http://127.0.0.1:8081', adminToken: process.env.STRANGLER_ADMIN_TOKEN }).catch((err) => {
          if ((err as { code?: string }).code === 'EUSAGE') throw new UsageError((err as Error).message);
          throw err;
        });
    // From the file there are no stats: left out rather than shown as zeros.
    const live = !values.routes;
    const shown = live ? routes : routes.map(({ stats: _stats, shadowStats: _shadowStats, breakers: _breakers, ...declared }) => declared);
    console.log(values.json ? JSON.stringify(shown, null, 2) : formatRoutes(routes, { live }));
    return 0;
  },
};
