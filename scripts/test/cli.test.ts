import net from 'node:net';
import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createTestDatabase } from '@strangler/platform/testing';
import { describeFailure, main } from '../src/cli.ts';

// A database with no tables at all (the template every test database is made from is migrated).
const empty = await createTestDatabase('monolith');
await empty.knex.raw('drop schema public cascade; create schema public');
const service = await createTestDatabase('notification');

afterEach(() => vi.restoreAllMocks());

/** Runs the CLI with these database names; its exit code and what it wrote to stderr. */
async function run(argv: string[], databases: { MONOLITH_DB: string; NOTIFICATION_SVC_DB: string }): Promise<{ code: number; err: string }> {
  const err: string[] = [];
  vi.spyOn(console, 'error').mockImplementation((line: string) => void err.push(line));
  vi.spyOn(console, 'log').mockImplementation(() => {});
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  const saved = Object.fromEntries(Object.keys(databases).map((k) => [k, process.env[k]]));
  Object.assign(process.env, databases);
  try {
    return { code: await main(argv), err: err.join('\n') };
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

describe('strangler failures caused by a setting or a missing step', () => {
  it('a database that does not exist: says which, and which settings name it', async () => {
    const { code, err } = await run(['verify', 'notification'], { MONOLITH_DB: 'strangler_no_such_db', NOTIFICATION_SVC_DB: service.name });
    expect(code).toBe(1);
    expect(err).toMatch(/^strangler verify failed: database "strangler_no_such_db" does not exist: check MONOLITH_DB and NOTIFICATION_SVC_DB/);
  });

  it('a database that is not migrated: says to migrate it, without the statement in front', async () => {
    const { code, err } = await run(['verify', 'notification'], { MONOLITH_DB: empty.name, NOTIFICATION_SVC_DB: service.name });
    expect(code).toBe(1);
    expect(err).toMatch(/^strangler verify failed: relation "\w+" does not exist: the database is not migrated; run "npm run strangler -- migrate"/);
    expect(err).not.toMatch(/select/i);
  });
});

describe('describeFailure', () => {
  it('leaves a message it has no advice for whole, and names every address a refused connection tried', async () => {
    expect(describeFailure(Object.assign(new Error('select 1 - 2 - invalid input syntax for type integer: "1 - 2"'), { code: '22P02' }))).toBe('select 1 - 2 - invalid input syntax for type integer: "1 - 2"');
    // A real refused connection to "localhost", which may resolve to several addresses.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const client = new pg.Client({ host: 'localhost', port, user: 'postgres', database: 'postgres' });
    const refused = await client.connect().then(() => null, (e: unknown) => e);
    expect(describeFailure(refused)).toMatch(new RegExp(`ECONNREFUSED.*: nothing listens at (\\S+:${port})( or \\S+:${port})*; is the server running there \\(Postgres: PGHOST and PGPORT`));
  });
});
