import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createDb, repoRoot } from '@strangler/platform';
import { adminConnection } from '@strangler/platform/testing';

const run = promisify(execFile);

/** Runs bench/outbox.ts with `env` added; resolves with its exit code and stderr (it must fail fast). */
async function bench(env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, ['--import', 'tsx', 'bench/outbox.ts'], { cwd: repoRoot, env: { ...process.env, ...env }, timeout: 60_000 });
    return { code: 0, stderr: '' };
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    return { code: e.code ?? -1, stderr: e.stderr ?? '' };
  }
}

describe('bench:outbox settings', () => {
  it('refuses a client count that is not a whole number, before it touches anything', async () => {
    const { code, stderr } = await bench({ BENCH_CLIENTS: 'many' });
    expect(code).not.toBe(0);
    expect(stderr).toContain('BENCH_CLIENTS="many": give a whole number of producing clients from 1 to 1000.');
  });

  it('refuses a drain phase size that is not a whole number of events, before it touches anything', async () => {
    const { code, stderr } = await bench({ BENCH_DRAIN_EVENTS: '-5' });
    expect(code).not.toBe(0);
    expect(stderr).toContain('BENCH_DRAIN_EVENTS="-5": give a whole number of events from 0 (no drain phase) to 1000000.');
  });

  it('refuses more clients than Postgres has connections for, before it creates any database', async () => {
    const tag = `bench_settings_${process.pid}`;
    const { code, stderr } = await bench({ BENCH_CLIENTS: '1000', BENCH_TAG: tag });
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/BENCH_CLIENTS=1000 needs 2010 more Postgres connections \(two pools of 1000, 10 for the relay and the consumer\), but the server has \d+ free \(max_connections \d+\): lower BENCH_CLIENTS to at most \d+ or raise max_connections\./);
    const admin = createDb(adminConnection(), { applicationName: 'bench-settings-test', pool: { max: 1 } });
    try {
      const { rows } = await admin.raw<{ rows: Array<{ datname: string }> }>('select datname from pg_database where datname like ?', [`${tag}%`]);
      expect(rows).toEqual([]);
    } finally {
      await admin.destroy();
    }
  });
});
