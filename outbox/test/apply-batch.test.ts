import { describe, expect, it } from 'vitest';
import type { Knex } from 'knex';
import { createTestDatabase } from '@strangler/platform/testing';
import { applyBatch, type ApplyOptions, type EventHandler } from '../src/consumer/apply-batch.ts';
import type { ReceivedEvent } from '../src/envelope.ts';
import { createDomainTables } from './helpers.ts';

// applyBatch's transaction (consumer/pg-transaction.ts): BEGIN travels with the inbox insert as
// one simple query with quoted literals, and the knex transaction object is reused per pooled
// connection. These are the ways that could go wrong.
const db = await createTestDatabase('monolith');
await createDomainTables(db.knex);
const pool = db.newPool('apply-batch');

let n = 0;
function event(id = `m-${++n}`, aggregateId = `a-${n}`, version = 1): ReceivedEvent {
  return { id, type: 'item.created', aggregateType: 'item', aggregateId, aggregateVersion: version, origin: 'monolith', occurredAt: new Date().toISOString(), schemaVersion: 1, payload: {}, headers: {}, attempts: 0, redelivered: false };
}

const record: EventHandler = {
  async apply(trx, e) {
    await trx('applied').insert({ event_id: e.id, aggregate_id: e.aggregateId, version: e.aggregateVersion });
  },
};

const opts = (handler: EventHandler, consumer = 'apply-batch'): ApplyOptions => ({ consumer, handler, acceptFirstSeen: false, timeoutMs: 10_000 });
const byId = (a: string[], b: string[]) => (a[0]! < b[0]! ? -1 : a[0]! > b[0]! ? 1 : 0);
const inbox = async (consumer: string) => (await db.knex('inbox').where({ consumer })).map((r: { message_id: string; event_type: string }) => [r.message_id, r.event_type]).sort(byId);
const appliedIds = async () => (await db.knex('applied').orderBy('n')).map((r: { event_id: string }) => r.event_id);

describe('applyBatch', () => {
  it('records message ids and types whatever characters they hold (quotes, backslashes, question marks, unicode)', async () => {
    const odd = ["it's", 'back\\slash', 'what?', '$1', "'); drop table inbox; --", 'ünï\u00e7ødé 🎉', 'tab\there'];
    const events = odd.map((id, i) => ({ ...event(id), type: `item.${odd[(i + 1) % odd.length]}` }));
    expect(await applyBatch(pool, opts(record, 'odd'), events)).toEqual(events.map(() => ({ kind: 'applied' })));
    expect(await inbox('odd')).toEqual(events.map((e) => [e.id, e.type]).sort(byId));
    // Each is a duplicate the second time.
    expect(await applyBatch(pool, opts(record, 'odd'), events)).toEqual(events.map(() => ({ kind: 'duplicate' })));
  });

  it('rolls the inbox rows and the effects back together when the handler throws, and the connection serves the next batch', async () => {
    const p = db.newPool('apply-batch-one');
    const failing: EventHandler = {
      async apply(trx, e) {
        await record.apply!(trx, e);
        throw new Error('handler failed');
      },
    };
    const e1 = event();
    await expect(applyBatch(p, opts(failing, 'rollback'), [e1])).rejects.toThrow('handler failed');
    expect(await inbox('rollback')).toEqual([]);
    expect(await appliedIds()).not.toContain(e1.id);
    // Retried (the same message again): applied now, once.
    expect(await applyBatch(p, opts(record, 'rollback'), [e1])).toEqual([{ kind: 'applied' }]);
    expect((await appliedIds()).filter((id) => id === e1.id)).toHaveLength(1);
    expect(await inbox('rollback')).toEqual([[e1.id, e1.type]]);
  });

  it('a transaction object kept past its batch refuses queries; commit() and rollback() in a handler are refused', async () => {
    let kept: Knex.Transaction | undefined;
    await applyBatch(pool, opts({ async apply(trx, e) { kept = trx; await record.apply!(trx, e); } }, 'kept'), [event()]);
    await expect(kept!.raw('select 1')).rejects.toThrow(/already complete/);

    for (const end of ['commit', 'rollback'] as const) {
      const e = event();
      const ending: EventHandler = {
        async apply(trx, ev) {
          await record.apply!(trx, ev);
          await trx[end]();
        },
      };
      await expect(applyBatch(pool, opts(ending, `ending-${end}`), [e])).rejects.toThrow(/must not (commit|roll back) the batch's transaction/);
      expect(await inbox(`ending-${end}`), end).toEqual([]);
      expect(await appliedIds(), end).not.toContain(e.id);
    }
  });

  it('savepoints in a handler work: an inner transaction rolled back leaves the rest of the batch', async () => {
    const e = event();
    const handler: EventHandler = {
      async apply(trx, ev) {
        await record.apply!(trx, ev);
        await trx
          .transaction(async (sp) => {
            await sp('applied').insert({ event_id: `${ev.id}-inner`, aggregate_id: ev.aggregateId, version: 0 });
            throw new Error('inner failed');
          })
          .catch(() => {});
      },
    };
    expect(await applyBatch(pool, opts(handler, 'savepoint'), [e])).toEqual([{ kind: 'applied' }]);
    const ids = await appliedIds();
    expect(ids).toContain(e.id);
    expect(ids).not.toContain(`${e.id}-inner`);
  });

  it('a batch whose connection died mid-way fails, and the pool hands out a working connection afterwards', async () => {
    const p = db.newPool('apply-batch-killed');
    const e = event();
    const killing: EventHandler = {
      async apply(trx) {
        await trx.raw('select pg_terminate_backend(pg_backend_pid())');
      },
    };
    await expect(applyBatch(p, opts(killing, 'killed'), [e])).rejects.toThrow();
    expect(await inbox('killed')).toEqual([]);
    expect(await applyBatch(p, opts(record, 'killed'), [e])).toEqual([{ kind: 'applied' }]);
    expect(await inbox('killed')).toEqual([[e.id, e.type]]);
  });

  it('a handler query still under way when the handler throws is refused, not run after the ROLLBACK outside the transaction', async () => {
    const e = event();
    const straggler = `${e.id}-straggler`;
    let late: Promise<unknown> | undefined;
    const handler: EventHandler = {
      async apply(trx, ev) {
        late = trx.raw('select pg_sleep(0.05)').then(() => trx('applied').insert({ event_id: straggler, aggregate_id: ev.aggregateId, version: 0 }));
        late.catch(() => {});
        throw new Error('handler failed');
      },
    };
    await expect(applyBatch(pool, opts(handler, 'straggler'), [e])).rejects.toThrow('handler failed');
    await expect(late).rejects.toThrow(/already complete/);
    expect(await appliedIds()).not.toContain(straggler);
    expect(await inbox('straggler')).toEqual([]);
  });

  it('a handler that caught a failed statement and went on fails its batch: Postgres rolled it back at COMMIT', async () => {
    const e = event();
    const handler: EventHandler = {
      async apply(trx, ev) {
        await record.apply!(trx, ev);
        await trx.raw('select 1 / 0').catch(() => {});
      },
    };
    await expect(applyBatch(pool, opts(handler, 'caught'), [e])).rejects.toThrow(/rolled back at COMMIT/);
    expect(await inbox('caught')).toEqual([]);
    expect(await appliedIds()).not.toContain(e.id);
  });

  it('several batches at once on one pool each apply once', async () => {
    const batches = Array.from({ length: 8 }, () => Array.from({ length: 5 }, () => event()));
    const outcomes = await Promise.all(batches.map((b) => applyBatch(pool, opts(record, 'parallel'), b)));
    expect(outcomes.flat()).toEqual(batches.flat().map(() => ({ kind: 'applied' })));
    const ids = await appliedIds();
    for (const e of batches.flat()) expect(ids.filter((id) => id === e.id)).toHaveLength(1);
    expect(await inbox('parallel')).toHaveLength(40);
  });
});
