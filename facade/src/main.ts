import path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { createLogger, exitAfterFailedStart, loadConfig, onShutdown, port, repoRoot, startTracing } from '@strangler/platform';
import { createFacade } from './facade.ts';
import { RouteTableError } from './routes/load.ts';
import { listenFacade } from './server.ts';

/**
 * `npm run facade -- [--routes <file>] [--port N] [--host H] [--admin-port N] [--admin-host H]
 * [--metrics-port N] [--metrics-host H] [--audit <file>] [--no-watch]`: the facade alone, in
 * front of whatever the route table names. Flags win over the environment (FACADE_ROUTES,
 * FACADE_PORT, FACADE_HOST, FACADE_ADMIN_PORT, FACADE_ADMIN_HOST, FACADE_METRICS_PORT,
 * FACADE_METRICS_HOST, FACADE_AUDIT_LOG, STRANGLER_ADMIN_TOKEN). SIGHUP reloads the route table;
 * SIGTERM/SIGINT stop accepting, drain in-flight requests and exit within 10 s.
 */
export const USAGE =
  'npm run facade -- [--routes <file>] [--port N] [--host H] [--admin-port N] [--admin-host H] [--metrics-port N] [--metrics-host H] [--audit <file>] [--no-watch]';

const env = {
  FACADE_ROUTES: z.string().default(path.join(repoRoot, 'facade/routes.yaml')),
  FACADE_PORT: port(8080),
  FACADE_HOST: z.string().default('127.0.0.1'),
  FACADE_ADMIN_PORT: port(8081),
  FACADE_ADMIN_HOST: z.string().default('127.0.0.1'),
  /** Unset: no metrics listener of its own (metrics are on the admin port when the admin API is on). */
  FACADE_METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  FACADE_METRICS_HOST: z.string().default('127.0.0.1'),
  FACADE_AUDIT_LOG: z.string().optional(),
  STRANGLER_ADMIN_TOKEN: z.string().min(16, 'must be at least 16 characters (e.g. openssl rand -hex 24)').optional(),
};

function parsePort(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${flag} must be a port number from 0 to 65535, got "${value}"`);
  return n;
}

export async function main(argv: string[]): Promise<void> {
  const logger = createLogger('facade');
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: {
        routes: { type: 'string' },
        port: { type: 'string' },
        host: { type: 'string' },
        'admin-port': { type: 'string' },
        'admin-host': { type: 'string' },
        'metrics-port': { type: 'string' },
        'metrics-host': { type: 'string' },
        audit: { type: 'string' },
        'no-watch': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
    if (args.help) {
      console.log(`Usage: ${USAGE}`);
      return;
    }
  } catch (err) {
    console.error(`${(err as Error).message}\n\nUsage: ${USAGE}`);
    process.exit(2);
  }
  let cfg;
  try {
    cfg = loadConfig(env);
  } catch (err) {
    exitAfterFailedStart(logger, err, [], 'facade'); // a ConfigError: every problem, each saying what to set
  }
  let portArg: number | undefined;
  let adminPortArg: number | undefined;
  let metricsPortArg: number | undefined;
  try {
    portArg = parsePort(args.port, '--port');
    adminPortArg = parsePort(args['admin-port'], '--admin-port');
    metricsPortArg = parsePort(args['metrics-port'], '--metrics-port');
  } catch (err) {
    console.error(`${(err as Error).message}\n\nUsage: ${USAGE}`);
    process.exit(2);
  }
  let stopTracing;
  try {
    stopTracing = startTracing('facade', logger);
  } catch (err) {
    console.error((err as Error).message);
    process.exit(2);
  }

  let facade;
  try {
    facade = await createFacade({
      routesFile: path.resolve(args.routes ?? cfg.FACADE_ROUTES),
      auditFile: args.audit ?? cfg.FACADE_AUDIT_LOG,
      adminToken: cfg.STRANGLER_ADMIN_TOKEN,
      watch: !args['no-watch'],
      logger,
    });
  } catch (err) {
    if (err instanceof RouteTableError) {
      console.error(err.message);
      process.exit(2); // a file to fix, like a setting: see Supervisor
    }
    throw err;
  }
  const listeners = {
    port: portArg ?? cfg.FACADE_PORT,
    host: args.host ?? cfg.FACADE_HOST,
    adminPort: adminPortArg ?? cfg.FACADE_ADMIN_PORT,
    adminHost: args['admin-host'] ?? cfg.FACADE_ADMIN_HOST,
    metricsPort: metricsPortArg ?? cfg.FACADE_METRICS_PORT ?? null,
    metricsHost: args['metrics-host'] ?? cfg.FACADE_METRICS_HOST,
  };
  let running;
  try {
    running = await listenFacade(facade, listeners);
  } catch (err) {
    exitAfterFailedStart(logger, err, [
      [listeners.port, '--port or FACADE_PORT'],
      [listeners.adminPort, '--admin-port or FACADE_ADMIN_PORT'],
      [listeners.metricsPort, '--metrics-port or FACADE_METRICS_PORT'],
    ], 'facade');
  }
  logger.info(
    {
      port: running.main.port,
      url: running.main.url,
      adminPort: running.admin?.port ?? null,
      admin: running.admin ? running.admin.url : 'off (set STRANGLER_ADMIN_TOKEN to enable)',
      metricsPort: running.metrics?.port ?? null,
      metrics: [running.admin && `${running.admin.url}/metrics`, running.metrics && `${running.metrics.url}/metrics`].filter(Boolean).join(' ') || 'off (set FACADE_METRICS_PORT, or STRANGLER_ADMIN_TOKEN for the admin port)',
      routes: facade.routesFile,
      audit: facade.audit?.file ?? null,
      generation: facade.table().generation,
    },
    'facade listening',
  );
  process.on('SIGHUP', () => {
    void facade.reload({ source: 'sighup' }).then(
      (result) => logger.info({ result }, 'SIGHUP reload'),
      (err) => logger.error({ err }, 'SIGHUP reload failed'),
    );
  });
  onShutdown(logger, [() => running.close(8_000), stopTracing]);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
