import { beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase } from '@strangler/platform/testing';
import { backfill, verify, type SyncSpec } from '../src/sync/index.ts';

const monolith = await createTestDatabase('monolith');
const service = await createTestDatabase('monolith');
// Another source database (the refusal to resume a checkpoint taken from a different one).
const other = await createTestDatabase('monolith');

const spec: SyncSpec = {
  name: 'items',
  source: { table: 'legacy_items' },
  target: { table: 'items' },
  key: 'id',
  version: 'version',
  columns: ['title', 'data', 'created_at'],
  sourceExpr: { title: 'name' },
};

const key = (i: number) => `item-${String(i).padStart(5, '0')}`;

beforeEach(async () => {
  await monolith.knex.raw('drop table if exists legacy_items; create table legacy_items (id text primary key, version int not null, name text not null, data jsonb not null, created_at timestamptz not null)');
  await service.knex.raw('drop table if exists items, strangler_backfill; create table items (id text primary key, version int not null, title text not null, data jsonb not null, created_at timestamptz not null)');
  const rows = Array.from({ length: 2_500 }, (_, i) => ({ id: key(i), version: 1 + (i % 3), name: `Item ${i}`, data: JSON.stringify({ n: i, tags: ['a', 'b'] }), created_at: new Date(Date.UTC(2024, 0, 1) + i * 60_000) }));
  for (let i = 0; i < rows.length; i += 500) await monolith.knex('legacy_items').insert(rows.slice(i, i + 500));
});

describe('backfill', () => {
  it('copies every row in batches from one snapshot, and verify then finds no difference', async () => {
    const progress: number[] = [];
    const result = await backfill(monolith.knex, service.knex, spec, { batchSize: 1_000, onProgress: (done) => void progress.push(done) });
    expect(result).toMatchObject({ total: 2_500, copied: 2_500, skippedNewer: 0 });
    expect(progress).toEqual([1_000, 2_000, 2_500]);
    const report = await verify(monolith.knex, service.knex, spec, { chunkSize: 700 });
    expect(report).toMatchObject({ sourceRows: 2_500, targetRows: 2_500, differences: 0, examples: [] });
  });

  it('never overwrites a newer version the service already applied from an event', async () => {
    await service.knex('items').insert({ id: key(7), version: 99, title: 'renamed by an event', data: {}, created_at: new Date() });
    const result = await backfill(monolith.knex, service.knex, spec);
    expect(result).toMatchObject({ copied: 2_499, skippedNewer: 1 });
    expect(await service.knex('items').where({ id: key(7) }).first()).toMatchObject({ version: 99, title: 'renamed by an event' });
  });

  it('reads one consistent snapshot: rows committed during the backfill are left to the event stream', async () => {
    // Sorts inside the second batch, so a backfill reading outside its snapshot would copy it.
    const late = `${key(1_500)}-late`;
    const result = await backfill(monolith.knex, service.knex, spec, {
      batchSize: 1_000,
      onProgress: async (done) => {
        if (done === 1_000) await monolith.knex('legacy_items').insert({ id: late, version: 1, name: 'late', data: {}, created_at: new Date() });
      },
    });
    expect(await monolith.knex('legacy_items').where({ id: late }).first()).toBeDefined();
    expect(result.total).toBe(2_500);
    expect(await service.knex('items').where({ id: late }).first()).toBeUndefined();
  });

  it('resumes after an interruption from its checkpoint without copying rows twice', async () => {
    const abort = new AbortController();
    const first = await backfill(monolith.knex, service.knex, spec, { batchSize: 500, onProgress: (done) => void (done >= 1_000 && abort.abort()), signal: abort.signal });
    expect(first.copied).toBe(1_000);
    const second = await backfill(monolith.knex, service.knex, spec, { batchSize: 500 });
    expect(second).toMatchObject({ copied: 1_500, resumedAfter: key(999) });
    const third = await backfill(monolith.knex, service.knex, spec);
    expect(third).toMatchObject({ total: 2_500, copied: 0, skippedNewer: 2_500, resumedAfter: null });
    expect((await verify(monolith.knex, service.knex, spec)).differences).toBe(0);
  });

  it('after a completed backfill, runs a new pass that copies rows written since without events (a bulk load)', async () => {
    await backfill(monolith.knex, service.knex, spec);
    await monolith.knex('legacy_items').insert({ id: 'item-bulk', version: 1, name: 'bulk', data: {}, created_at: new Date() });
    await monolith.knex('legacy_items').where({ id: key(3) }).update({ name: 'changed in bulk', version: 10 });
    const again = await backfill(monolith.knex, service.knex, spec);
    expect(again).toMatchObject({ total: 2_501, copied: 2, skippedNewer: 2_499, resumedAfter: null });
    expect((await verify(monolith.knex, service.knex, spec, { settleAttempts: 0 })).differences).toBe(0);
  });

  it('refuses to resume a checkpoint taken from another source database, and --restart starts over', async () => {
    const abort = new AbortController();
    await backfill(monolith.knex, service.knex, spec, { batchSize: 500, onProgress: () => abort.abort(), signal: abort.signal });
    await other.knex.raw('drop table if exists legacy_items; create table legacy_items (id text primary key, version int not null, name text not null, data jsonb not null, created_at timestamptz not null)');
    await other.knex('legacy_items').insert({ id: 'item-00000', version: 1, name: 'other', data: {}, created_at: new Date() });
    const error = await backfill(other.knex, service.knex, spec).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(new RegExp(`interrupted while copying from database "${monolith.name}.*", not "${other.name}.*".*--restart`));
    expect(await backfill(other.knex, service.knex, spec, { restart: true })).toMatchObject({ total: 1, resumedAfter: null });
  });
});

describe('verify', () => {
  it('reports missing, extra and changed rows with the fields that differ', async () => {
    await backfill(monolith.knex, service.knex, spec);
    await service.knex('items').where({ id: key(10) }).delete();
    await service.knex('items').where({ id: key(20) }).update({ title: 'drifted', version: 5 });
    await service.knex('items').insert({ id: 'item-extra', version: 1, title: 'only here', data: {}, created_at: new Date() });
    const report = await verify(monolith.knex, service.knex, spec, { chunkSize: 300, settleAttempts: 1, settleMs: 10 });
    expect(report.differences).toBe(3);
    expect(report.examples).toEqual([
      { kind: 'missing', key: key(10) },
      { kind: 'changed', key: key(20), fields: { version: { monolith: 3, service: 5 }, title: { monolith: 'Item 20', service: 'drifted' } } },
      { kind: 'extra', key: 'item-extra' },
    ]);
  });

  it('compares values as they are: a text or JSON value turned from a string into a number (or back) differs', async () => {
    await backfill(monolith.knex, service.knex, spec);
    await monolith.knex('legacy_items').where({ id: key(1) }).update({ name: '007' });
    await service.knex('items').where({ id: key(1) }).update({ title: '7' });
    await service.knex('items').where({ id: key(2) }).update({ data: { n: '2', tags: ['a', 'b'] } });
    const report = await verify(monolith.knex, service.knex, spec, { settleAttempts: 0 });
    expect(report.examples).toEqual([
      { kind: 'changed', key: key(1), fields: { title: { monolith: '007', service: '7' } } },
      { kind: 'changed', key: key(2), fields: { data: { monolith: { n: 2, tags: ['a', 'b'] }, service: { n: '2', tags: ['a', 'b'] } } } },
    ]);
  });

  it('handles batches and differences beyond the 65,535 parameters one statement takes', async () => {
    await monolith.knex.raw(`insert into legacy_items (id, version, name, data, created_at)
      select 'bulk-' || lpad(i::text, 6, '0'), 1, 'Bulk ' || i, jsonb_build_object('n', i), now() from generate_series(1, 70000) i`);
    // Before the backfill every row differs: re-read all at once, 72,500 keys were one statement.
    const before = await verify(monolith.knex, service.knex, spec, { settleAttempts: 0 });
    expect(before).toMatchObject({ sourceRows: 72_500, targetRows: 0, differences: 72_500 });
    expect(before.examples[0]).toEqual({ kind: 'missing', key: 'bulk-000001' });
    // 20,000 rows of 5 columns: 100,000 parameters in one upsert, were it one statement.
    const copied = await backfill(monolith.knex, service.knex, spec, { batchSize: 20_000 });
    expect(copied).toMatchObject({ total: 72_500, copied: 72_500 });
    expect((await verify(monolith.knex, service.knex, spec, { settleAttempts: 0 })).differences).toBe(0);
  }, 60_000);

  it('does not report a difference that an in-flight event resolves while it settles', async () => {
    await backfill(monolith.knex, service.knex, spec);
    await service.knex('items').where({ id: key(3) }).update({ title: 'stale' });
    const fixed = new Promise((resolve) => setTimeout(() => resolve(service.knex('items').where({ id: key(3) }).update({ title: 'Item 3' })), 150));
    const report = await verify(monolith.knex, service.knex, spec, { settleAttempts: 5, settleMs: 100 });
    expect(await fixed).toBe(1);
    expect(report.differences).toBe(0);
  });
});
