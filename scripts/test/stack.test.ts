import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadRouteTableFile } from '@strangler/facade';
import { repoRoot } from '@strangler/platform';
import { createTestBroker } from '@strangler/platform/testing';
import { databases } from '../src/databases.ts';
import { bindStackQueues, loadStackConfig, routeTableProblems, stackProcesses } from '../src/stack.ts';

const dbs = databases({});
const broker = await createTestBroker();
const byName = (env: Record<string, string> = {}) => Object.fromEntries(stackProcesses(dbs, loadStackConfig(env), env).map((p) => [p.name, p]));

describe('npm start: the processes of the stack', () => {
  it('runs the monolith, the notification service, a relay per database, the sync consumer and the facade, at the README addresses', () => {
    const procs = byName();
    expect(Object.keys(procs)).toEqual(['monolith', 'notification', 'relay:monolith', 'relay:notification', 'monolith-sync', 'facade']);
    for (const p of Object.values(procs)) expect(existsSync(path.join(repoRoot, p.entry)), p.entry).toBe(true);
    expect(procs.monolith!.env).toEqual({ PORT: '3000', NOTIFICATION_GRPC_TARGET: '127.0.0.1:50054' });
    expect(procs.notification!.env).toEqual({ PORT: '3104', GRPC_PORT: '50054' });
    expect(procs['relay:monolith']).toMatchObject({ args: ['--db', 'monolith'], env: { RELAY_METRICS_PORT: '9464' } });
    expect(procs['relay:notification']).toMatchObject({ args: ['--db', 'notification_svc'], env: { RELAY_METRICS_PORT: '9465' } });
    expect(procs['monolith-sync']!.env).toEqual({ SYNC_METRICS_PORT: '9470' });
    expect(procs.facade!.args).toEqual(['--port', '8080', '--routes', path.join(repoRoot, 'facade/routes.yaml'), '--metrics-port', '9466']);
  });

  it('moves each process by its variable, sets the variable each child reads, and points the monolith at the moved gRPC port', () => {
    const procs = byName({
      MONOLITH_PORT: '4000',
      NOTIFICATION_PORT: '4104',
      NOTIFICATION_GRPC_PORT: '41054',
      MONOLITH_RELAY_METRICS_PORT: '19464',
      NOTIFICATION_RELAY_METRICS_PORT: '19465',
      SYNC_METRICS_PORT: '19470',
      FACADE_PORT: '18080',
      FACADE_METRICS_PORT: '19466',
      FACADE_ROUTES: '.data/routes.yaml',
      // a global RELAY_METRICS_PORT must not make the two relays collide
      RELAY_METRICS_PORT: '9999',
      MONOLITH_DB: 'legacy',
    });
    expect(procs.monolith!.env).toEqual({ PORT: '4000', NOTIFICATION_GRPC_TARGET: '127.0.0.1:41054' });
    expect(procs.notification!.env).toEqual({ PORT: '4104', GRPC_PORT: '41054' });
    expect(procs['relay:monolith']!.env).toEqual({ RELAY_METRICS_PORT: '19464' });
    expect(procs['relay:notification']!.env).toEqual({ RELAY_METRICS_PORT: '19465' });
    expect(procs['monolith-sync']!.env).toEqual({ SYNC_METRICS_PORT: '19470' });
    expect(procs.facade!.args).toEqual(['--port', '18080', '--routes', path.join(repoRoot, '.data/routes.yaml'), '--metrics-port', '19466']);
    expect(byName({ NOTIFICATION_GRPC_TARGET: 'dns:///notification:50054' }).monolith!.env!.NOTIFICATION_GRPC_TARGET).toBe('dns:///notification:50054');
    expect(stackProcesses(databases({ MONOLITH_DB: 'legacy' }), loadStackConfig({}))[2]!.args).toEqual(['--db', 'legacy']);
  });

  it('refuses two processes on one port, and port 0, naming the variables to change', () => {
    expect(() => loadStackConfig({ NOTIFICATION_RELAY_METRICS_PORT: '9464' })).toThrow(/MONOLITH_RELAY_METRICS_PORT and NOTIFICATION_RELAY_METRICS_PORT are all 9464: give each process its own port/);
    expect(() => loadStackConfig({ MONOLITH_PORT: '0', FACADE_PORT: 'x' })).toThrow(/FACADE_PORT="x": must be a port number from 1 to 65535[\s\S]*MONOLITH_PORT="0": must be a fixed port/);
  });
});

describe('npm start: the route table agrees with the ports', () => {
  it('accepts the checked-in facade/routes.yaml with the default ports', async () => {
    const { spec } = await loadRouteTableFile(path.join(repoRoot, 'facade/routes.yaml'));
    expect(routeTableProblems(spec, loadStackConfig({}))).toEqual([]);
  });

  it('refuses a table that sends a process of the stack to another loopback port, and says what to do', async () => {
    const { spec } = await loadRouteTableFile(path.join(repoRoot, 'facade/routes.yaml'));
    const problems = routeTableProblems(spec, loadStackConfig({ MONOLITH_PORT: '3300' }));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/sends upstream "monolith" to http:\/\/127\.0\.0\.1:3000, but MONOLITH_PORT=3300[\s\S]*set upstreams\.monolith\.url to http:\/\/127\.0\.0\.1:3300, and start with FACADE_ROUTES=/);
    // an upstream on another host is the user's choice
    const remote = { upstreams: { monolith: { url: 'http://legacy.internal:3000' }, notification: { url: 'http://localhost:3104' } } } as never;
    expect(routeTableProblems(remote, loadStackConfig({ MONOLITH_PORT: '3300' }))).toEqual([]);
  });
});

describe('npm start: consumer queues are bound before any relay publishes', () => {
  it('binds the service consumer and the monolith sync consumer, so events published before either connects wait in their queues', async () => {
    const env = { AMQP_URL: broker.url, EVENTS_EXCHANGE: broker.exchange, NOTIFICATION_QUEUE: `${broker.prefix}.notification`, SYNC_EXCHANGE: broker.exchange, SYNC_QUEUE_PREFIX: broker.prefix };
    const bound = await bindStackQueues(env);
    expect(bound).toEqual([`${broker.prefix}.notification.events`, `${broker.prefix}.monolith-sync.events`]);

    const conn = await broker.connect('publisher');
    const ch = await conn.createConfirmChannel();
    // The service's write: the monolith's sync consumer needs it (the service's own consumer ignores its origin).
    ch.publish(broker.exchange, 'notification.queued', Buffer.from('{}'), { persistent: true, mandatory: true });
    // The monolith's user: only the service consumes it.
    ch.publish(broker.exchange, 'user.registered', Buffer.from('{}'), { persistent: true, mandatory: true });
    await ch.waitForConfirms();
    expect((await ch.checkQueue(`${broker.prefix}.notification.events`)).messageCount).toBe(2);
    expect((await ch.checkQueue(`${broker.prefix}.monolith-sync.events`)).messageCount).toBe(1);
    await conn.close();
  });
});

describe('docker-compose.yml', () => {
  const compose = YAML.parse(readFileSync(path.join(repoRoot, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
    services: Record<string, { command?: string[]; environment?: Record<string, string>; depends_on?: Record<string, { condition: string }>; healthcheck?: unknown; ports?: string[] }>;
  };
  const services = compose.services;
  const initSql = readFileSync(path.join(repoRoot, 'docker/postgres/init.sql'), 'utf8');

  it('runs every process of npm start, from entry files that exist, on databases init.sql creates', () => {
    const entries = Object.values(services).flatMap((s) => (s.command ? [s.command.slice(0, 4).join(' ')] : []));
    for (const p of stackProcesses(dbs, loadStackConfig({}))) expect(entries).toContain(`node --import tsx ${p.entry}`);
    for (const [name, s] of Object.entries(services)) {
      if (!s.command) continue;
      expect(existsSync(path.join(repoRoot, s.command[3]!)), `${name}: ${s.command[3]}`).toBe(true);
      const db = s.command.includes('--db') ? s.command[s.command.indexOf('--db') + 1] : undefined;
      for (const name of [db, s.environment?.MONOLITH_DB, s.environment?.NOTIFICATION_SVC_DB]) if (name) expect(initSql).toContain(`CREATE DATABASE ${name};`);
      for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) if (condition === 'service_healthy') expect(services[dep]?.healthcheck, `${name} waits for ${dep}`).toBeTruthy();
    }
    expect(services['relay-monolith']!.environment!.RELAY_METRICS_PORT).not.toBe(services['relay-notification']!.environment!.RELAY_METRICS_PORT);
  });

  it('starts each relay only after the consumers of what it publishes are up (their queues bound)', () => {
    expect(Object.keys(services['relay-monolith']!.depends_on!)).toContain('notification');
    expect(Object.keys(services['relay-notification']!.depends_on!)).toContain('monolith-sync');
    // Healthy means ready: /healthz answers before the consumer, which connects in the background, has bound its queue.
    for (const consumer of ['notification', 'monolith-sync']) expect(JSON.stringify(services[consumer]!.healthcheck)).toMatch(/\/readyz'/);
  });

  it('gives the token secret and the database password only to the processes that read them', () => {
    const withSecret = Object.entries(services).filter(([, s]) => s.environment && 'AUTH_TOKEN_SECRET' in s.environment).map(([n]) => n);
    expect(withSecret.sort()).toEqual(['monolith', 'notification']);
    expect(services.facade!.environment).not.toHaveProperty('PGPASSWORD');
    expect(services.postgres!.healthcheck).toMatchObject({ test: ['CMD-SHELL', expect.stringContaining('-h 127.0.0.1')] });
  });

  it('gives the facade a valid table with the routes of facade/routes.yaml and compose service names as upstreams', async () => {
    const command = services.facade!.command!;
    const file = command[command.indexOf('--routes') + 1]!;
    const compose = (await loadRouteTableFile(path.join(repoRoot, file))).spec;
    const local = (await loadRouteTableFile(path.join(repoRoot, 'facade/routes.yaml'))).spec;
    expect(compose.routes).toEqual(local.routes);
    for (const [name, upstream] of Object.entries(compose.upstreams)) {
      const url = new URL(upstream.url);
      expect(services[url.hostname], `upstream ${name}: ${upstream.url}`).toBeDefined();
      expect(services[url.hostname]!.environment!.PORT).toBe(url.port);
    }
    expect(services.facade!.environment).toMatchObject({ FACADE_HOST: '0.0.0.0' });
  });
});
