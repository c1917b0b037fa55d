import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { loadConfig, repoRoot } from '@strangler/platform';
import { execFileAsync, spawnRelay, waitFor, writeEvent } from './helpers.ts';
import { z } from 'zod';
import { relayEnv } from '../src/relay/config.ts';

const db = await createTestDatabase('monolith');
// A database nobody migrated (or the wrong --db): no outbox.
const bare = await createTestDatabase('monolith');
await bare.knex.raw('drop schema public cascade; create schema public');
const broker = await createTestBroker();
await db.knex.raw('create table items (id text primary key, version int not null)');

describe('npm run relay', () => {
  it('serves /healthz, /readyz and /metrics, publishes, and exits 0 within 10 s of SIGTERM', async () => {
    const conn = await broker.connect('bind');
    const ch = await conn.createChannel();
    await ch.assertExchange(broker.exchange, 'topic', { durable: true });
    await ch.assertQueue(`${broker.prefix}.sink`, { durable: true });
    await ch.bindQueue(`${broker.prefix}.sink`, broker.exchange, '#');
    await conn.close();
    const relay = spawnRelay(db, broker);
    try {
      const line = await waitFor('the metrics URL', () => relay.output.find((l) => l.includes('relay metrics listening')), 15_000);
      const url = JSON.parse(line).url as string;
      expect(await (await fetch(`${url}/healthz`)).json()).toEqual({ status: 'ok' });
      const ready = await waitFor('readiness', async () => {
        const res = await fetch(`${url}/readyz`);
        return res.status === 200 ? res.json() : null;
      });
      expect(ready).toEqual({ status: 'ready', checks: { database: 'ok', broker: 'ok' } });
      await writeEvent(db.knex, 'm1');
      await waitFor('published', async () => (await db.knex('outbox').whereNull('published_at').count<{ c: number }[]>({ c: '*' }))[0]!.c === 0);
      const metrics = await waitFor('metrics', async () => {
        const text = await (await fetch(`${url}/metrics`)).text();
        return /strangler_relay_published_total\{[^}]*\} 1/.test(text) ? text : null;
      });
      expect(metrics).toMatch(/strangler_relay_leader\{[^}]*database="[^"]+"[^}]*\} 1/);
      expect(metrics).toMatch(/strangler_relay_lag_seconds/);
      const started = Date.now();
      await relay.kill('SIGTERM');
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(relay.child.exitCode).toBe(0);
    } finally {
      await relay.kill('SIGKILL');
    }
  });

  it('refuses to start without --db or with invalid settings, saying what to fix', async () => {
    const run = (args: string[], env: Record<string, string> = {}) =>
      execFileAsync(process.execPath, ['--import', 'tsx', 'outbox/src/relay-main.ts', ...args], { cwd: repoRoot, env: { ...process.env, ...env }, timeout: 20_000 }).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
      );
    expect(await run([])).toMatchObject({ code: 2, stderr: expect.stringMatching(/Missing --db/) });
    expect(await run(['--db', db.name], { RELAY_NOTIFY: 'maybe', RELAY_BATCH_SIZE: '0' })).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/RELAY_BATCH_SIZE="0"[\s\S]*RELAY_NOTIFY="maybe": must be "on" or "off"/),
    });
    expect(await run(['--db', db.name], { RELAY_BUSY_RAMP_FROM_PER_SEC: '1000', RELAY_BUSY_RAMP_TO_PER_SEC: '500' })).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/RELAY_BUSY_RAMP_TO_PER_SEC="500": must be above RELAY_BUSY_RAMP_FROM_PER_SEC/),
    });
    // A database the relay can never publish from: said once, not logged several times a second.
    expect(await run(['--db', 'strangler_no_such_db'], { RELAY_METRICS_PORT: '0' })).toMatchObject({ code: 2, stderr: expect.stringMatching(/^Database "strangler_no_such_db" does not exist on 127\.0\.0\.1:\d+: check --db/) });
    expect(await run(['--db', bare.name], { RELAY_METRICS_PORT: '0' })).toMatchObject({ code: 2, stderr: expect.stringMatching(new RegExp(`^Database "${bare.name}" has no outbox \\(no table outbox in its search path\\): run its migrations`)) });
    expect(await run(['--database', db.name])).toMatchObject({ code: 2, stderr: expect.stringMatching(/Unknown option '--database'[\s\S]*Usage: npm run relay/) });
    // A second relay on one host with the default port: say so, without a stack trace.
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      const res = await run(['--db', db.name], { RELAY_METRICS_PORT: String(port), AMQP_URL: broker.url });
      expect(res).toMatchObject({ code: 2, stderr: expect.stringMatching(new RegExp(`RELAY_METRICS_PORT="${port}": cannot listen on 127\\.0\\.0\\.1:${port}: the port is in use`)) });
      expect(res.stderr).not.toMatch(/\n\s+at /);
    } finally {
      taken.close();
    }
  });

  it('reads a setting of blanks as unset, not as 0 (a retention of 0 deletes every published row)', () => {
    const env = loadConfig(relayEnv, { RELAY_RETENTION_HOURS: ' ', RELAY_METRICS_PORT: '\t' });
    expect(env.RELAY_RETENTION_HOURS).toBe(24);
    expect(env.RELAY_METRICS_PORT).toBe(9464);
  });

  it('--help names every RELAY_ setting with its actual default', async () => {
    const { stderr } = await execFileAsync(process.execPath, ['--import', 'tsx', 'outbox/src/relay-main.ts', '--help'], { cwd: repoRoot, timeout: 20_000 });
    const defaults = z.object(relayEnv).parse({});
    for (const [name, value] of Object.entries(defaults)) {
      // its own entry only: up to the next variable
      const line = new RegExp(`^  ${name} (?:(?!\\n  RELAY_)[\\s\\S])*?\\(default ([^);]*)`, 'm').exec(stderr);
      expect(line, `${name} in --help`).not.toBeNull();
      expect(line![1]!.replace(/,/g, '')).toBe(String(value));
    }
    expect(stderr).toMatch(/^  RELAY_INSTANCE /m);
  });
});
