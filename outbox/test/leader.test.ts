import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '@strangler/platform/testing';
import { sleep } from '@strangler/platform';
import { LeaderLease } from '../src/relay/leader.ts';
import { tcpProxy, waitFor } from './helpers.ts';

const db = await createTestDatabase('monolith');

const advisoryLocks = async () => {
  const { rows } = await db.knex.raw<{ rows: Array<{ n: number }> }>(
    `select count(*)::int as n from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())`,
  );
  return rows[0]!.n;
};

describe('leader lease', () => {
  it('closes a session that took the lock but failed to record the leader, so the lock is not stranded', async () => {
    // The relay started before the migrations, say: the lock is taken, then the update of
    // outbox_relay fails. The session must not keep the lock from every later attempt.
    await db.knex.raw('alter table outbox_relay rename to outbox_relay_later');
    const errors: Array<{ code?: string }> = [];
    const lease = new LeaderLease({ connection: db.connection, applicationName: 'lease-test', instance: 'lease-test', retryMs: 50, onError: (e) => errors.push(e as { code?: string }) });
    const stop = new AbortController();
    const acquiring = lease.acquire(stop.signal);
    try {
      await waitFor('two failed attempts', () => errors.length >= 2);
      expect(errors[0]!.code).toBe('42P01');
      await waitFor('no session left holding the lock', async () => (await advisoryLocks()) === 0, 5_000);
      await db.knex.raw('alter table outbox_relay_later rename to outbox_relay');
      const tenure = await Promise.race([acquiring, sleep(10_000).then(() => null)]);
      expect(tenure, 'the lease once the table exists').not.toBeNull();
      expect(await advisoryLocks()).toBe(1);
      expect((await db.knex('outbox_relay').first()).leader).toBe('lease-test');
    } finally {
      stop.abort();
      await lease.release();
    }
  });

  it('a lease whose connect was in flight when it was given up does not take the lock afterwards', async () => {
    // The relay stopped while its lease session was still connecting (a slow database): the
    // connect completes after release(), and nothing in the process would ever free that lock.
    const proxy = await tcpProxy(db.connection.host, db.connection.port);
    proxy.stall(1_000);
    const lease = new LeaderLease({
      connection: { ...db.connection, host: '127.0.0.1', port: proxy.port },
      applicationName: 'lease-stopped',
      instance: 'lease-stopped',
      retryMs: 50,
      onError: () => {},
    });
    const stop = new AbortController();
    const acquiring = lease.acquire(stop.signal);
    try {
      await waitFor('the lease connecting', () => proxy.accepted === 1);
      stop.abort();
      await lease.release();
      expect(await Promise.race([acquiring, sleep(10_000).then(() => 'still waiting')])).toBeNull();
      expect(await advisoryLocks()).toBe(0);
      // Its session is closed too, not left open in the background.
      await waitFor('no session left', async () => {
        const { rows } = await db.knex.raw(`select count(*)::int as n from pg_stat_activity where application_name = 'lease-stopped'`);
        return rows[0].n === 0;
      }, 5_000);
    } finally {
      await lease.release();
      await proxy.close();
    }
  });

  it('holds its session to tcp_user_timeout, and a query on it fails once the connection went silent', async () => {
    const proxy = await tcpProxy(db.connection.host, db.connection.port);
    const lease = new LeaderLease({
      connection: { ...db.connection, host: '127.0.0.1', port: proxy.port },
      applicationName: 'lease-silent',
      instance: 'lease-silent',
      retryMs: 50,
      queryTimeoutMs: 1_000,
      onError: () => {},
    });
    const stop = new AbortController();
    try {
      const tenure = await Promise.race([lease.acquire(stop.signal), sleep(10_000).then(() => null)]);
      expect(tenure).not.toBeNull();
      // Data left unacknowledged this long makes Postgres drop the connection (and the lock) even
      // where keepalives cannot run.
      expect((await tenure!.session.query('show tcp_user_timeout')).rows[0].tcp_user_timeout).toBe('15000');
      proxy.partition('existing');
      const started = Date.now();
      await expect(tenure!.session.query('select 1')).rejects.toThrow(/timeout/i);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      stop.abort();
      await lease.release();
      await proxy.close();
    }
  });
});
