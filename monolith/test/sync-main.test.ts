import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '@strangler/platform';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { notificationPublisher, waitFor } from './sync-helpers.ts';

const db = await createTestDatabase('monolith');
const broker = await createTestBroker();
const { publish } = await notificationPublisher(broker);

interface Started {
  child: ChildProcess;
  logs: string[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the metrics URL once the process logged "listening". */
  url: Promise<string>;
}

function startSync(env: Record<string, string>): Started {
  const child = spawn(process.execPath, ['--import', 'tsx', 'monolith/src/sync-main.ts'], {
    cwd: repoRoot,
    env: {
      ...process.env,
      VITEST: '',
      LOG_LEVEL: 'info',
      DATABASE_URL: '',
      PGHOST: db.connection.host,
      PGPORT: String(db.connection.port),
      PGUSER: db.connection.user,
      ...(db.connection.password ? { PGPASSWORD: db.connection.password } : {}),
      MONOLITH_DB: db.name,
      AMQP_URL: broker.url,
      SYNC_EXCHANGE: broker.exchange,
      SYNC_QUEUE_PREFIX: broker.prefix,
      SYNC_METRICS_PORT: '0',
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
  const url = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sync-main.ts did not log "listening" within 30 s:\n${logs.join('\n')}`)), 30_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      logs.push(line);
      try {
        const entry = JSON.parse(line) as { msg?: string; url?: string };
        if (entry.msg === 'listening' && entry.url) {
          clearTimeout(timer);
          resolve(entry.url);
        }
      } catch {
        /* not a log line */
      }
    });
    void exit.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`sync-main.ts exited with ${code} before listening:\n${logs.join('\n')}`));
    });
  });
  url.catch(() => {});
  return { child, logs, exit, url };
}

const within = <T>(promise: Promise<T>, ms: number, what: string) =>
  Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms))]);

describe('monolith/src/sync-main.ts', () => {
  it('refuses a bad configuration at start with a message that says what to set', async () => {
    const started = startSync({ SYNC_QUEUE_PREFIX: 'has spaces', SYNC_CONCURRENCY: '0' });
    expect(await within(started.exit, 20_000, 'exit')).toEqual({ code: 2, signal: null });
    const logs = started.logs.join('\n');
    expect(logs).toMatch(/SYNC_QUEUE_PREFIX="has spaces": use letters, digits/);
    expect(logs).toMatch(/SYNC_CONCURRENCY="0"/);
    expect(logs).not.toMatch(/\n\s+at /); // said plainly, no stack trace
  });

  it('applies the service events, answers /healthz /readyz /metrics, and exits 0 within 10 s of SIGTERM', async () => {
    const started = startSync({});
    const url = await started.url;
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    // Ready once its consumer connected (in the background: the process is up while the broker is not).
    await waitFor('ready', async () => (await fetch(`${url}/readyz`)).status === 200, 10_000);
    expect(await (await fetch(`${url}/readyz`)).json()).toEqual({ status: 'ready', checks: { database: 'ok', broker: 'ok' } });

    const n = randomUUID();
    await publish({ notificationId: n, version: 1 });
    await publish({ notificationId: n, version: 2 });
    await waitFor('v2 applied by the process', async () => (await db.knex('notifications').where({ id: n }).first())?.version === 2, 15_000);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/monolith_sync_applied_total\{aggregate="notification"[^}]*\} 2/);
    expect(metrics).toMatch(/monolith_sync_connected\{[^}]*\} 1/);

    const signalledAt = Date.now();
    started.child.kill('SIGTERM');
    expect(await within(started.exit, 10_000, 'exit after SIGTERM')).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(10_000);
    expect(started.logs.join('\n')).toMatch(/"msg":"stopped"/);
  });
});
