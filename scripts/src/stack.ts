import type { ProcessSpec } from './supervisor.ts';
import type { databases } from './databases.ts';

/**
 * The processes `npm start` runs, in start order. Each reads the same environment (Postgres,
 * RabbitMQ, database names); ports are the documented defaults unless overridden.
 */
export function stackProcesses(dbs: ReturnType<typeof databases>, env: Record<string, string | undefined>): ProcessSpec[] {
  return [
    { name: 'monolith', entry: 'monolith/src/main.ts', env: { PORT: env.MONOLITH_PORT ?? '3000' } },
    { name: 'relay:monolith', entry: 'outbox/src/relay-main.ts', args: ['--db', dbs.monolith.name] },
    { name: 'facade', entry: 'facade/src/main.ts', args: ['--port', env.FACADE_PORT ?? '8080'] },
  ];
}
