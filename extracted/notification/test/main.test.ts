import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { createDb, dropDatabase, grpc, pgConnection, repoRoot, ResilientGrpcClient } from '@strangler/platform';
import { adminConnection, createTestBroker, testEnv } from '@strangler/platform/testing';
import { loadNotificationProto } from '../src/index.ts';
import { TEST_SECRET, notificationBody, testUser, waitFor, within } from './helpers.ts';

// A database main.ts must create and migrate itself. The name follows the test-database pattern
// (t_<unix seconds>_...), so a crashed run's leftover is dropped by the next run's global setup.
const database = `t_${Math.floor(Date.now() / 1000)}_${randomBytes(4).toString('hex')}_notification_main`;
afterAll(() => dropDatabase(adminConnection(), database, { force: true }));
const broker = await createTestBroker();

interface Started {
  child: ChildProcess;
  url: string;
  grpc: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  logs: string[];
}

/** Spawns main.ts and waits (at most 30 s) for its "listening" log line. */
async function startService(env: Record<string, string> = {}): Promise<Started> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'extracted/notification/src/main.ts'], {
    cwd: repoRoot,
    env: {
      ...process.env,
      VITEST: '',
      LOG_LEVEL: 'info',
      NOTIFICATION_SVC_DB: database,
      PORT: '0',
      GRPC_PORT: '0',
      AMQP_URL: broker.url,
      EVENTS_EXCHANGE: broker.exchange,
      NOTIFICATION_QUEUE: `${broker.prefix}.notification`,
      AUTH_TOKEN_SECRET: TEST_SECRET,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  afterAll(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const logs: string[] = [];
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
  const { url, grpc } = await new Promise<{ url: string; grpc: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`main.ts did not log "listening" within 30 s:\n${logs.join('\n')}`)), 30_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      logs.push(line);
      try {
        const entry = JSON.parse(line) as { msg?: string; url?: string; grpc?: string };
        if (entry.msg === 'listening' && entry.url && entry.grpc) {
          clearTimeout(timer);
          resolve({ url: entry.url, grpc: entry.grpc });
        }
      } catch {
        /* not a log line */
      }
    });
    void exit.then(({ code }) => reject(new Error(`main.ts exited with ${code} before listening:\n${logs.join('\n')}`)));
  });
  return { child, url, grpc, exit, logs };
}

describe('main.ts', () => {
  it('creates and migrates its database, serves HTTP and gRPC, and on SIGTERM finishes the delivery in progress and exits 0 within 10 s', async () => {
    const { child, url, grpc: grpcAddress, exit, logs } = await startService({ NOTIFICATION_PROVIDER_LATENCY_MS: '1500', NOTIFICATION_POLL_MS: '20' });
    expect(logs.join('\n')).toMatch(/"msg":"created database"/);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    // Ready once its consumer connected (in the background: the APIs do not wait for the broker).
    await waitFor('ready', async () => (await fetch(`${url}/readyz`)).status === 200, 10_000);
    expect(await (await fetch(`${url}/readyz`)).json()).toEqual({ status: 'ready', checks: { database: 'ok', broker: 'ok' } });

    const user = testUser();
    const res = await fetch(`${url}/api/notifications`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'main-test-1', ...user.auth }, body: JSON.stringify(notificationBody(user)) });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const client = new ResilientGrpcClient(new (loadNotificationProto())(grpcAddress, grpc.credentials.createInsecure()), 'notification', { attempts: 1 });
    try {
      expect(await client.call('Get', { id, userId: user.id })).toMatchObject({ id, status: 'queued' });
    } finally {
      client.close();
    }
    await new Promise((r) => setTimeout(r, 300)); // the dispatcher is now inside the 1.5 s provider call

    const signalledAt = Date.now();
    child.kill('SIGTERM');
    await waitFor('the HTTP port to close', () => fetch(`${url}/healthz`).then(() => false, () => true), 3_000);
    expect(await within(exit, 10_000, 'exit after SIGTERM')).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(10_000);
    const text = logs.join('\n');
    expect(text).toMatch(/"msg":"stopped"/);
    expect(text).toMatch(/"requestId":"main-test-1".*"msg":"request"/);

    const db = createDb(pgConnection(testEnv(), database), { applicationName: 'main-test' });
    try {
      expect(await db('notifications').where({ id }).first()).toMatchObject({ status: 'sent', version: 2 });
      expect(await db('provider_deliveries').where({ notification_id: id }).select('outcome')).toEqual([{ outcome: 'delivered' }]);
    } finally {
      await db.destroy();
    }
  });

  it('starts again on the now-migrated database and exits 0 at once when idle', async () => {
    const { child, url, exit, logs } = await startService();
    expect(logs.join('\n')).toMatch(/"msg":"schema up to date"/);
    await waitFor('ready', async () => (await fetch(`${url}/readyz`)).status === 200, 10_000);
    const signalledAt = Date.now();
    child.kill('SIGTERM');
    expect(await within(exit, 10_000, 'exit after SIGTERM')).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(3_000);
  });

  it('has its outbox published by `npm run relay -- --db <its database>`', async () => {
    const conn = await broker.connect('probe');
    const ch = await conn.createChannel();
    const probe = `${broker.prefix}.probe`;
    await ch.assertExchange(broker.exchange, 'topic', { durable: true });
    await ch.assertQueue(probe, { durable: false, autoDelete: true });
    await ch.bindQueue(probe, broker.exchange, 'notification.*');
    const relay = spawn(process.execPath, ['--import', 'tsx', 'outbox/src/relay-main.ts', '--db', database], {
      cwd: repoRoot,
      env: { ...process.env, VITEST: '', AMQP_URL: broker.url, RELAY_EXCHANGE: broker.exchange, RELAY_METRICS_PORT: '0', RELAY_POLL_INTERVAL_MS: '100' },
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => relay.once('exit', resolve));
    try {
      const received: Array<{ type: string; origin: string }> = [];
      await waitFor('the queued and sent events', async () => {
        for (let msg = await ch.get(probe, { noAck: true }); msg; msg = await ch.get(probe, { noAck: true })) received.push(JSON.parse(msg.content.toString()));
        return received.length >= 2;
      }, 20_000);
      expect(received.map((e) => [e.type, e.origin])).toEqual([
        ['notification.queued', 'notification'],
        ['notification.sent', 'notification'],
      ]);
    } finally {
      relay.kill('SIGTERM');
      await within(exited, 10_000, 'relay exit');
      await conn.close();
    }
  });

  it('refuses to start on invalid configuration, naming every problem', async () => {
    await expect(startService({ PORT: 'abc', NOTIFICATION_MAX_ATTEMPTS: '0' })).rejects.toThrow(/exited with 2[\s\S]*PORT[\s\S]*NOTIFICATION_MAX_ATTEMPTS/);
  });
});

