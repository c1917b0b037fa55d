import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { dropDatabase, repoRoot } from '@strangler/platform';
import { adminConnection } from '@strangler/platform/testing';

// A database main.ts must create and migrate itself. The name follows the test-database pattern
// (t_<unix seconds>_...), so a crashed run's leftover is dropped by the next run's global setup.
const database = `t_${Math.floor(Date.now() / 1000)}_${randomBytes(4).toString('hex')}_main`;
afterAll(() => dropDatabase(adminConnection(), database, { force: true }));

interface Started {
  child: ChildProcess;
  url: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  logs: string[];
}

/** Spawns main.ts and waits (at most 30 s) for its "listening" log line. */
async function startMonolith(env: Record<string, string>): Promise<Started> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'monolith/src/main.ts'], {
    cwd: repoRoot,
    env: { ...process.env, VITEST: '', LOG_LEVEL: 'info', MONOLITH_DB: database, PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  afterAll(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const logs: string[] = [];
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`main.ts did not log "listening" within 30 s:\n${logs.join('\n')}`)), 30_000);
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
    void exit.then(({ code }) => reject(new Error(`main.ts exited with ${code} before listening:\n${logs.join('\n')}`)));
  });
  return { child, url, exit, logs };
}

const within = <T>(promise: Promise<T>, ms: number, what: string) =>
  Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms))]);

async function post(url: string, body: unknown, token?: string) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('main.ts', () => {
  it('creates and migrates a fresh database, and on SIGTERM finishes the in-flight request and exits 0 within 10 s', async () => {
    const { child, url, exit, logs } = await startMonolith({ PAYMENT_PROVIDER_LATENCY_MS: '1500' });
    expect(logs.join('\n')).toMatch(/"msg":"created database"/);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);

    const email = `shutdown-${randomBytes(4).toString('hex')}@example.com`;
    expect((await post(`${url}/api/users`, { email, name: 'Grace', password: 'password123' })).status).toBe(201);
    const { token } = (await post(`${url}/api/sessions`, { email, password: 'password123' })).body as { token: string };

    const inFlight = post(`${url}/api/orders`, { items: [{ sku: 'A', quantity: 1, unitPriceCents: 100 }], currency: 'EUR', paymentMethod: { token: 'tok_visa' } }, token);
    await new Promise((r) => setTimeout(r, 300));
    const signalledAt = Date.now();
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 100));
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();

    const order = await within(inFlight, 10_000, 'the in-flight request');
    expect(order.status).toBe(201);
    expect(order.body).toMatchObject({ status: 'placed', totalCents: 100 });
    const { code, signal } = await within(exit, 10_000, 'exit after SIGTERM');
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(10_000);
    expect(logs.join('\n')).toMatch(/"msg":"stopped"/);
  });

  it('starts again on the now-migrated database and exits 0 at once when idle', async () => {
    const { child, url, exit, logs } = await startMonolith({});
    expect(logs.join('\n')).toMatch(/"msg":"schema up to date"/);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    const signalledAt = Date.now();
    child.kill('SIGTERM');
    expect(await within(exit, 10_000, 'exit after SIGTERM')).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(3_000);
  });
});
