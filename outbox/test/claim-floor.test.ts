import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase } from '@strangler/platform/testing';
import { createOutboxXidTrigger, dropOutboxXidTrigger } from '../src/index.ts';
import { ClaimFloor, claimBatch, claimFloorSupported } from '../src/relay/claim.ts';
import { LEASE_SESSION_SETTINGS } from '../src/relay/leader.ts';
import { claimSqlLiteral } from './helpers.ts';
import type { OutboxRow } from '../src/envelope.ts';

/**
 * The relay's claim floor (relay/claim.ts): claims start above the rows already published, and
 * never above a row whose transaction is still running, however it interleaves with the claims.
 * Claims here run as the leader runs them; "publishing" is instant: what a claim returns is
 * confirmed by the next one, as on a short busy poll.
 */
const db = await createTestDatabase('monolith');
const clients: pg.Client[] = [];
async function client(name: string): Promise<pg.Client> {
  const c = new pg.Client({ ...db.connection, application_name: name });
  await c.connect();
  clients.push(c);
  return c;
}
// Claims run with the leader's session settings, and so with the plans the relay runs.
const session = await client('claim-floor-leader');
await session.query(LEASE_SESSION_SETTINGS);
afterAll(() => Promise.all(clients.map((c) => c.end())));
beforeEach(async () => {
  await db.knex('outbox').update({ published_at: db.knex.fn.now() }).whereNull('published_at');
  await createOutboxXidTrigger(db.knex);
});

const INSERT = `insert into outbox (id, aggregate_type, aggregate_id, aggregate_version, event_type, payload) values ($1, 'item', $2, 1, 'item.created', $3)`;
/** One committed outbox row. */
const commitRow = async (aggregateId = randomUUID()) => {
  const id = randomUUID();
  await session.query(INSERT, [id, aggregateId, '{}']);
  return id;
};

/**
 * Runs claims for `ms`, each confirming what the one before returned, and then on until `until()`
 * holds (10 s at most); the ids claimed, in order. The floor rises only once every transaction
 * older than its candidate has ended, in any database of the cluster: other test files running
 * at the same time can hold it back for a while, hence `until` rather than a fixed time.
 */
async function claimFor(floor: ClaimFloor, ms: number, until: () => boolean = () => true): Promise<string[]> {
  const claimed: string[] = [];
  let confirmed: number[] = [];
  const end = performance.now() + ms;
  const limit = end + 10_000;
  do {
    const rows: OutboxRow[] = await claimBatch(session, 500, [], confirmed, floor);
    claimed.push(...rows.map((r) => r.id));
    confirmed = rows.map((r) => r.seq);
    await new Promise((r) => setTimeout(r, 5));
  } while (performance.now() < end || (!until() && performance.now() < limit));
  if (confirmed.length) await claimBatch(session, 500, [], confirmed, floor);
  return claimed;
}

const seqOf = async (id: string) => Number((await db.knex('outbox').where({ id }).first('seq')).seq);

/**
 * A transaction that draws its `seq` and then, before it has written anything, waits `sleepMs`
 * inside the same statement: the value of `payload` comes after `seq` in the row and sleeps.
 * Without the trigger it has no transaction id while it sleeps.
 */
async function slowInsert(sleepMs: number): Promise<{ id: string; done: Promise<void>; client: pg.Client }> {
  const c = await client('slow-writer');
  const id = randomUUID();
  await c.query('begin');
  const done = c
    .query(`insert into outbox (id, aggregate_type, aggregate_id, aggregate_version, event_type, payload)
            values ($1, 'item', $2, 1, 'item.created', (select '{}'::jsonb from pg_sleep($3::float8 / 1000)))`, [id, randomUUID(), sleepMs])
    .then(() => c.query('commit'))
    .then(() => undefined);
  return { id, done, client: c };
}

describe('claim floor', () => {
  it('rises above what is published, so a claim no longer steps over every row published since the last VACUUM', async () => {
    // 30,000 rows published (marked as the relay marks them, in batches), nothing vacuumed.
    await db.knex.raw(`insert into outbox (id, aggregate_type, aggregate_id, aggregate_version, event_type, payload)
      select gen_random_uuid(), 'item', 'bulk-' || n, 1, 'item.created', '{}' from generate_series(1, 30000) n`);
    for (let i = 0; i < 30; i++) {
      await db.knex.raw(`update outbox set published_at = now() where seq in (select seq from outbox where published_at is null order by seq limit 1000)`);
    }
    const floor = new ClaimFloor(await claimFloorSupported(session), 3_600_000);
    expect(floor.enabled).toBe(true);
    const due = await commitRow();
    const dueSeq = await seqOf(due);
    expect(await claimFor(floor, 100, () => floor.start > dueSeq)).toEqual([due]);
    expect(floor.start).toBeGreaterThan(dueSeq);

    const buffers = async (start: number) => {
      const { rows } = await session.query(`explain (analyze, buffers, format json) ${claimSqlLiteral(start)}`);
      const plan = rows[0]['QUERY PLAN'][0];
      return Number(plan.Plan['Shared Hit Blocks'] ?? 0) + Number(plan.Plan['Shared Read Blocks'] ?? 0);
    };
    const fromZero = await buffers(0);
    const fromFloor = await buffers(floor.start);
    // From 0 the claim reads the index's dead entries of the 30,000 published rows (about 85 pages, twice).
    expect(fromZero).toBeGreaterThan(100);
    expect(fromFloor).toBeLessThan(30);
  });

  it('stays below a transaction that is still open, and its row is claimed once it commits', async () => {
    const floor = new ClaimFloor(true, 3_600_000);
    const late = await client('late-writer');
    const lateId = randomUUID();
    await late.query('begin');
    await late.query(INSERT, [lateId, randomUUID(), '{}']);
    const lateSeq = Number((await late.query('select seq from outbox where id = $1', [lateId])).rows[0].seq);
    const after = [await commitRow(), await commitRow(), await commitRow()];
    expect(await claimFor(floor, 150)).toEqual(after);
    expect(floor.start).toBeLessThanOrEqual(lateSeq);
    await late.query('commit');
    const more = await commitRow();
    const moreSeq = await seqOf(more);
    expect(await claimFor(floor, 150, () => floor.start > moreSeq)).toEqual([lateId, more]);
    expect(floor.start).toBeGreaterThan(moreSeq);
  });

  it('stays below a transaction whose id is higher than every ended one when a later seq commits', async () => {
    // U takes its id, then T takes a higher one and draws a seq, then U draws a higher seq and
    // commits: the highest committed seq is U's, no ended transaction has an id as high as T's
    // (a snapshot's xmax is one past the highest ended id, not past every id handed out), and
    // T is still open.
    const floor = new ClaimFloor(true, 3_600_000);
    const u = await client('writer-u');
    const t = await client('writer-t');
    await u.query('begin');
    await u.query('select pg_current_xact_id()');
    await t.query('begin');
    const tId = randomUUID();
    await t.query(INSERT, [tId, randomUUID(), '{}']);
    const uId = randomUUID();
    await u.query(INSERT, [uId, randomUUID(), '{}']);
    await u.query('commit');
    expect(await claimFor(floor, 150)).toEqual([uId]);
    const tSeq = Number((await t.query('select seq from outbox where id = $1', [tId])).rows[0].seq);
    expect(floor.start).toBeLessThanOrEqual(tSeq);
    await t.query('commit');
    expect(await claimFor(floor, 150)).toEqual([tId]);
  });

  it('stays at or below rows in flight, so a batch whose publication failed is claimed again', async () => {
    const floor = new ClaimFloor(true, 3_600_000);
    const first = await commitRow();
    const [inFlight] = await claimBatch(session, 500, [], [], floor);
    expect(inFlight!.id).toBe(first);
    // Its confirm never comes while later rows are claimed and confirmed, until the floor's
    // candidates matured and it rose (as far as the row in flight lets it).
    let confirmed: number[] = [];
    const limit = performance.now() + 10_000;
    while (floor.start === 0 && performance.now() < limit) {
      await commitRow();
      const rows = await claimBatch(session, 500, [inFlight!.seq], confirmed, floor);
      confirmed = rows.map((r) => r.seq);
      await new Promise((r) => setTimeout(r, 10));
    }
    await claimBatch(session, 500, [inFlight!.seq], confirmed, floor);
    expect(floor.start).toBeGreaterThan(0);
    expect(floor.start).toBeLessThanOrEqual(inFlight!.seq);
    // The batch failed: its row is no longer in flight, and the next claim finds it again.
    expect((await claimBatch(session, 500, [], [], floor)).map((r) => r.id)).toEqual([first]);
  });

  it('reports how long a transaction left open holds it back', async () => {
    const floor = new ClaimFloor(true, 3_600_000);
    const open = await client('long-writer');
    await open.query('begin');
    try {
      await open.query('select pg_current_xact_id()');
      await commitRow();
      expect(floor.heldMs()).toBe(0);
      await claimFor(floor, 300); // the row claimed, then a candidate that cannot mature
      expect(floor.heldMs()).toBeGreaterThanOrEqual(150);
    } finally {
      await open.query('commit');
    }
    // Other test files' transactions share the cluster: bounded, not a single claim.
    await claimFor(floor, 20, () => floor.heldMs() === 0);
    expect(floor.heldMs()).toBe(0);
  });

  it('with the trigger, a transaction has its id before it draws a seq: a slow insert is not passed over', async () => {
    const floor = new ClaimFloor(true, 3_600_000);
    const slow = await slowInsert(1_000);
    await new Promise((r) => setTimeout(r, 300)); // it has drawn its seq and sleeps
    const during = [await commitRow(), await commitRow()];
    expect(await claimFor(floor, 300)).toEqual(during);
    await slow.done;
    expect(floor.start).toBeLessThanOrEqual(await seqOf(slow.id));
    expect(await claimFor(floor, 100)).toEqual([slow.id]);
  });

  it('without the trigger the same slow insert would be passed over, so the relay uses no floor then', async () => {
    await dropOutboxXidTrigger(db.knex);
    expect(await claimFloorSupported(session)).toBe(false);
    // What a floor would do regardless: rise above the sleeping transaction's seq and never claim its row.
    const forced = new ClaimFloor(true, 3_600_000);
    const slow = await slowInsert(1_000);
    await new Promise((r) => setTimeout(r, 300));
    const during = [await commitRow(), await commitRow()];
    // Above the last of them is above the sleeping one, which drew its seq first.
    const lastSeq = await seqOf(during[1]!);
    expect(await claimFor(forced, 300, () => forced.start > lastSeq)).toEqual(during);
    await slow.done;
    expect(forced.start).toBeGreaterThan(await seqOf(slow.id));
    expect(await claimFor(forced, 100)).toEqual([]);
    // The relay's: no floor, the row is claimed.
    const none = new ClaimFloor(await claimFloorSupported(session), 3_600_000);
    expect(await claimFor(none, 100)).toEqual([slow.id]);
    expect(none.start).toBe(0);
  });

  it('a sequence that caches values (drawn out of time order) turns the floor off too', async () => {
    await session.query(`alter table outbox alter column seq set cache 10`);
    try {
      expect(await claimFloorSupported(session)).toBe(false);
    } finally {
      await session.query(`alter table outbox alter column seq set cache 1`);
    }
    expect(await claimFloorSupported(session)).toBe(true);
  });

  it('a trigger that replica-mode writers skip, or one disabled while the relay leads, turns the floor off', async () => {
    await session.query('alter table outbox enable trigger outbox_assign_xid'); // fires in origin mode only
    expect(await claimFloorSupported(session)).toBe(false);
    await createOutboxXidTrigger(db.knex);
    const floor = new ClaimFloor(true, 100);
    const row = await commitRow();
    expect(await claimFor(floor, 80, () => floor.start > 0)).toEqual([row]);
    expect(floor.start).toBeGreaterThan(0);
    await session.query('alter table outbox disable trigger outbox_assign_xid');
    await claimFor(floor, 150); // a full scan falls due meanwhile, and the check before it
    expect(floor.enabled).toBe(false);
    expect(floor.start).toBe(0);
  });

  it('is not lifted above the sequence by a row whose seq was given by hand, so later events are still claimed at once', async () => {
    const floor = new ClaimFloor(true, 3_600_000);
    const first = await commitRow();
    // A row copied in with its seq (from a backup, another database), far above the sequence.
    const copied = randomUUID();
    await session.query(`insert into outbox (id, seq, aggregate_type, aggregate_id, aggregate_version, event_type, payload) overriding system value values ($1, 1000000000, 'item', $2, 1, 'item.created', '{}')`, [copied, randomUUID()]);
    const firstSeq = await seqOf(first);
    expect(await claimFor(floor, 100, () => floor.start > firstSeq)).toEqual([first, copied]);
    // Before: the floor rose to 1,000,000,001, and rows drawn from the sequence waited for the
    // full scan (hourly here, every minute by default).
    expect(floor.start).toBeLessThan(1_000_000_000);
    const later = await commitRow();
    expect(await claimFor(floor, 100)).toEqual([later]);
  });

  it('a full scan every fullScanIntervalMs finds a row set back to unpublished below the floor', async () => {
    const floor = new ClaimFloor(true, 200);
    const first = await commitRow();
    const second = await commitRow();
    const secondSeq = await seqOf(second);
    expect(await claimFor(floor, 100, () => floor.start > secondSeq)).toEqual([first, second]);
    expect(floor.start).toBeGreaterThan(secondSeq);
    await db.knex('outbox').where({ id: first }).update({ published_at: null });
    expect(await claimFor(floor, 400)).toEqual([first]);
  });

  it('runs as one generic plan on the leader session, and leaves out the rows in flight and those it marks', async () => {
    const floor = new ClaimFloor(true, 3_600_000);
    const ids = [];
    for (let i = 0; i < 12; i++) ids.push(await commitRow());
    const seqs = await Promise.all(ids.map(seqOf));
    // Rows 0-3 in flight, 4-7 confirmed by this claim (marked published), 8-11 claimed.
    const claimed = await claimBatch(session, 500, seqs.slice(0, 4), seqs.slice(4, 8), floor);
    expect(claimed.map((r) => r.id)).toEqual(ids.slice(8));
    const published = await db.knex('outbox').whereIn('id', ids).whereNotNull('published_at').pluck('id');
    expect(published.sort()).toEqual(ids.slice(4, 8).sort());
    // The rows in flight failed: the next claims find them again, with the others still in flight.
    expect((await claimBatch(session, 500, seqs.slice(8), [], floor)).map((r) => r.id)).toEqual(ids.slice(0, 4));
    for (let i = 0; i < 10; i++) await claimBatch(session, 500, seqs.slice(0, 4), seqs.slice(8), floor);
    // Planned once, not on every call (plan_cache_mode in LEASE_SESSION_SETTINGS).
    const { rows } = await session.query(`select generic_plans, custom_plans from pg_prepared_statements where name = 'strangler_outbox_claim'`);
    expect(Number(rows[0].custom_plans)).toBe(0);
    expect(Number(rows[0].generic_plans)).toBeGreaterThanOrEqual(12);
  });
});
