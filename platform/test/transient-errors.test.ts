import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import knexFactory from 'knex';
import pg from 'pg';
import { adminConnection } from '../src/testing/index.ts';
import { isTransientDbError, withAdminClient } from '../src/index.ts';

/** The error a real operation raises (it must fail). */
async function errorOf(operation: () => Promise<unknown>): Promise<unknown> {
  try {
    await operation();
  } catch (err) {
    return err;
  }
  throw new Error('expected the operation to fail');
}

describe('isTransientDbError, on errors raised by real connections', () => {
  const connection = adminConnection();

  it('retries a pool that had no connection to give in time', async () => {
    const quiet = { warn() {}, error() {}, deprecate() {}, debug() {} };
    const knex = knexFactory({ client: 'pg', connection, pool: { min: 0, max: 1 }, acquireConnectionTimeout: 200, log: quiet });
    const trx = await knex.transaction();
    try {
      const err = await errorOf(() => knex.raw('select 1'));
      expect((err as Error).name).toBe('KnexTimeoutError');
      expect(isTransientDbError(err)).toBe(true);
    } finally {
      await trx.rollback();
      await knex.destroy();
    }
  });

  it('retries "too many connections" (53300) and refused connections', async () => {
    const role = `t_limit_${randomBytes(4).toString('hex')}`;
    await withAdminClient(connection, (c) => c.query(`create role ${role} login connection limit 0`));
    try {
      const tooMany = await errorOf(async () => {
        const client = new pg.Client({ ...connection, user: role });
        await client.connect();
        await client.end();
      });
      expect((tooMany as { code?: string }).code).toBe('53300');
      expect(isTransientDbError(tooMany)).toBe(true);
    } finally {
      await withAdminClient(connection, (c) => c.query(`drop role ${role}`));
    }
    const refused = await errorOf(() => new pg.Client({ ...connection, port: 1 }).connect());
    expect(isTransientDbError(refused)).toBe(true);
  });

  it('retries a connect that timed out against a host that does not answer', async () => {
    const silent = net.createServer(() => {}).listen(0, '127.0.0.1');
    await new Promise((r) => silent.once('listening', r));
    try {
      const port = (silent.address() as net.AddressInfo).port;
      const err = await errorOf(() => new pg.Client({ ...connection, port, connectionTimeoutMillis: 200 }).connect());
      expect((err as Error).message).toMatch(/timeout/);
      expect(isTransientDbError(err)).toBe(true);
    } finally {
      silent.close();
      // the client's socket is destroyed on timeout; close() returns once it is gone
    }
  });

  it('does not retry errors that would repeat: a syntax error, a unique violation', async () => {
    const client = new pg.Client(connection);
    await client.connect();
    try {
      expect(isTransientDbError(await errorOf(() => client.query('selec 1')))).toBe(false);
      await client.query('create temp table u (id int primary key)');
      await client.query('insert into u values (1)');
      const dup = await errorOf(() => client.query('insert into u values (1)'));
      expect((dup as { code?: string }).code).toBe('23505');
      expect(isTransientDbError(dup)).toBe(false);
    } finally {
      await client.end();
    }
  });
});
