import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import request from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { createRelay } from '@strangler/outbox';
import { repoRoot } from '@strangler/platform';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { startMonolithSync } from '../src/sync/consumer.ts';
import { placeOrder, registerUser, setupMonolith } from './helpers.ts';
import { waitFor } from './sync-helpers.ts';

// The REAL notification service (extracted/notification/src/main.ts) as a child process on its
// own test database and this file's exchange and queues; SIGKILLed and restarted on the same
// gRPC port. Everything it touches belongs to this file, so it runs with the default project.

const svcDb = await createTestDatabase('notification');
const broker = await createTestBroker();

/** A port free right now (the service must come back on the same one, so it cannot be 0). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
const grpcPort = await freePort();

interface ServiceProcess {
  child: ChildProcess;
  logs: string[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children = new Set<ChildProcess>();
afterAll(() => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')));

/** Spawns the service and waits (at most 30 s) for its "listening" log line. */
async function startService(): Promise<ServiceProcess> {
  const c = svcDb.connection;
  const child = spawn(process.execPath, ['--import', 'tsx', 'extracted/notification/src/main.ts'], {
    cwd: repoRoot,
    env: {
      ...process.env,
      VITEST: '',
      LOG_LEVEL: 'info',
      DATABASE_URL: '',
      PGHOST: c.host,
      PGPORT: String(c.port),
      PGUSER: c.user,
      ...(c.password ? { PGPASSWORD: c.password } : {}),
      NOTIFICATION_SVC_DB: svcDb.name,
      PORT: '0',
      GRPC_PORT: String(grpcPort),
      AMQP_URL: broker.url,
      EVENTS_EXCHANGE: broker.exchange,
      NOTIFICATION_QUEUE: `${broker.prefix}.notification`,
      NOTIFICATION_POLL_MS: '50',
      NOTIFICATION_RETRY_BASE_MS: '100',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const logs: string[] = [];
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the notification service did not log "listening" within 30 s:\n${logs.join('\n')}`)), 30_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      logs.push(line);
      if (line.includes('"msg":"listening"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exit.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the notification service exited (${code ?? signal}) before listening:\n${logs.join('\n')}`));
    });
  });
  return { child, logs, exit };
}

const m = await setupMonolith({
  notifications: {
    transport: 'grpc',
    grpc: {
      target: `127.0.0.1:${grpcPort}`,
      deadlineMs: 1_000,
      attempts: 2,
      breakerResetMs: 500,
      forwarder: { pollIntervalMs: 50, outageBaseMs: 50, outageMaxMs: 500, retryBaseMs: 100, retryMaxMs: 1_000 },
    },
  },
});
const forwarder = m.forwarder;
afterAll(() => forwarder.close());

// The way back: the service's relay publishes its events, the monolith's sync consumer applies them.
const sync = await startMonolithSync({ db: m.db.newPool('monolith-sync'), amqpUrl: broker.url, exchange: broker.exchange, queue: `${broker.prefix}.monolith-sync`, retry: { baseMs: 100, maxMs: 1_000, maxAttempts: 30 } });
afterAll(() => sync.stop());
const relay = createRelay({ connection: svcDb.connection, amqpUrl: broker.url, exchange: broker.exchange, pollIntervalMs: 100, applicationName: 'test-relay' });
afterAll(() => relay.stop());
// And the way there, as deployed: the monolith's relay publishes user.registered, which gives the
// service's users projection the address its emails go to.
const monolithRelay = createRelay({ connection: m.db.connection, amqpUrl: broker.url, exchange: broker.exchange, pollIntervalMs: 100, applicationName: 'test-monolith-relay' });
afterAll(() => monolithRelay.stop());

const pending = async () => Number((await m.db.knex('notification_requests').count<{ c: number }[]>({ c: '*' }))[0]!.c);

describe('killing the notification service while orders are placed through the monolith', () => {
  it('orders still succeed; the breaker opens; notifications are queued and delivered after recovery, none lost, none sent twice', { timeout: 120_000 }, async () => {
    let service = await startService();
    forwarder.start();
    await relay.start();
    await monolithRelay.start();
    const user = await registerUser(m.app);
    const orderIds: string[] = [];
    const statuses: number[] = [];
    const place = async () => {
      const res = await placeOrder(m.app, user);
      statuses.push(res.status);
      if (res.status === 201) orderIds.push(res.body.id);
    };

    // A stream of orders; the service is SIGKILLed after the 5th, mid-stream.
    const stream = (async () => {
      for (let i = 0; i < 20; i++) {
        await place();
        if (i === 4) service.child.kill('SIGKILL');
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await stream;
    expect(await service.exit).toEqual({ code: null, signal: 'SIGKILL' });
    await waitFor('the breaker to open', () => forwarder.client.breaker.opened, 10_000);
    expect((await request(m.app).get('/metrics')).text).toMatch(/grpc_client_breaker_state\{upstream="notification",state="open"[^}]*\} 1/);
    for (let i = 0; i < 5; i++) await place();
    expect(statuses).toEqual(Array(25).fill(201));
    expect(await pending()).toBeGreaterThan(0);

    service = await startService();
    try {
      await waitFor('every queued request to be forwarded', async () => (await pending()) === 0, 30_000);
      const delivered = async () =>
        svcDb.knex.raw<{ rows: Array<{ order_id: string; notifications: number; delivered: number }> }>(`
          select n.data->>'orderId' as order_id, count(distinct n.id)::int as notifications,
                 count(d.seq) filter (where d.outcome = 'delivered')::int as delivered
            from notifications n left join provider_deliveries d on d.notification_id = n.id
           group by 1`);
      await waitFor('every notification to be delivered by the service', async () => (await delivered()).rows.filter((r) => r.delivered > 0).length === 25, 30_000);
      const rows = (await delivered()).rows;
      expect(rows.map((r) => r.order_id).sort()).toEqual([...orderIds].sort());
      for (const r of rows) expect({ order: r.order_id, notifications: r.notifications, delivered: r.delivered }).toEqual({ order: r.order_id, notifications: 1, delivered: 1 });
      // Each to the user's address, known to the service from the monolith's user.registered.
      expect(await svcDb.knex('provider_deliveries').distinct('channel', 'recipient')).toEqual([{ channel: 'email', recipient: user.email }]);

      // And back to the monolith: its notifications table holds every one, sent, without delivering it itself.
      await waitFor('the monolith to hold every notification as sent', async () => (await m.db.knex('notifications').where({ user_id: user.id, status: 'sent' })).length === 25, 30_000);
      expect(await m.db.knex('notification_dispatch')).toEqual([]);
      expect(forwarder.client.breaker.closed).toBe(true);
    } finally {
      service.child.kill('SIGTERM');
      expect(await Promise.race([service.exit, new Promise((r) => setTimeout(() => r('timeout'), 10_000))])).toEqual({ code: 0, signal: null });
    }
  });
});
