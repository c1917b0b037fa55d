import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { appendEvent } from '@strangler/outbox';
import { command as status } from '../src/commands/status.ts';

const monolith = await createTestDatabase('monolith');
const service = await createTestDatabase('notification');
const broker = await createTestBroker();

afterEach(() => vi.restoreAllMocks());

async function runStatus(json: boolean, { overrides = {} as Record<string, string>, exitCode = 0, timeout = undefined as string | undefined } = {}): Promise<string> {
  const out: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((line: string) => void out.push(line));
  const set = { MONOLITH_DB: monolith.name, NOTIFICATION_SVC_DB: service.name, ...overrides };
  const env = Object.fromEntries(Object.keys(set).map((k) => [k, process.env[k]]));
  Object.assign(process.env, set);
  try {
    expect(await status.run({ positionals: [], values: { json, timeout } })).toBe(exitCode);
  } finally {
    for (const [k, v] of Object.entries(env)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
  return out.join('\n');
}

describe('strangler status', () => {
  it('tells events held for want of a bound queue, and refused ones, apart from relay lag', async () => {
    await monolith.knex.transaction(async (trx) => {
      for (const [type, id] of [['order.placed', 'o1'], ['order.placed', 'o2'], ['payment.captured', 'p1'], ['user.updated', 'u1']] as const) {
        await appendEvent(trx, { aggregateType: type.split('.')[0]!, aggregateId: id, aggregateVersion: 1, eventType: type, payload: {}, origin: 'monolith' });
      }
    });
    // What the relay records for a row the broker returned; user.updated is merely not relayed yet.
    await monolith.knex('outbox').whereIn('event_type', ['order.placed', 'payment.captured']).update({ attempts: 1, last_error: 'unroutable: NO_ROUTE (no queue is bound)', next_attempt_at: monolith.knex.raw("now() + interval '2 seconds'") });
    // And for one it refused for another reason (a row written past appendEvent).
    const { seq } = await monolith.knex('outbox').insert({ id: randomUUID(), aggregate_type: 'user', aggregate_id: 'u2', aggregate_version: 1, event_type: 'user.created', payload: {}, headers: {}, attempts: 1, last_error: 'cannot be sent over AMQP: the routing key (event type) is 300 bytes, AMQP allows 255', next_attempt_at: monolith.knex.raw("now() + interval '2 seconds'") }).returning('seq').then((r) => r[0]!);

    const report = JSON.parse(await runStatus(true));
    const outbox = report.outboxes.find((o: { database: string }) => o.database === monolith.name);
    expect(outbox).toMatchObject({ unpublished: 5, unroutable: { 'order.placed': 2, 'payment.captured': 1 }, refused: { count: 1, first: [{ seq: Number(seq), eventType: 'user.created', error: expect.stringMatching(/is 300 bytes/) }] } });
    expect(report.outboxes.find((o: { database: string }) => o.database === service.name)).toMatchObject({ unpublished: 0, unroutable: {}, refused: { count: 0, first: [] } });

    const text = await runStatus(false);
    expect(text).toMatch(/5 unpublished/);
    expect(text).toMatch(/of which 3 held because no queue is bound for order\.placed \(2\), payment\.captured \(1\)/);
    expect(text).toMatch(new RegExp(`of which 1 refused .*\\n.*seq ${seq} user\\.created: cannot be sent over AMQP`));
  });

  it('looks at the queues the processes are configured to use (NOTIFICATION_QUEUE, SYNC_QUEUE_PREFIX)', async () => {
    const conn = await broker.connect('status');
    const ch = await conn.createChannel();
    await ch.assertQueue(`${broker.prefix}.notification.events`, { durable: true });
    await ch.sendToQueue(`${broker.prefix}.notification.events`, Buffer.from('{}'));
    await ch.assertQueue(`${broker.prefix}.monolith-sync.dead`, { durable: true });
    await ch.close();
    await conn.close();
    const report = JSON.parse(await runStatus(true, { overrides: { NOTIFICATION_QUEUE: `${broker.prefix}.notification`, SYNC_QUEUE_PREFIX: broker.prefix } }));
    expect(report.queues).toEqual([
      { queue: `${broker.prefix}.notification.events`, messages: 1, consumers: 0 },
      { queue: `${broker.prefix}.notification.dead`, messages: null, consumers: null },
      { queue: `${broker.prefix}.monolith-sync.events`, messages: null, consumers: null },
      { queue: `${broker.prefix}.monolith-sync.dead`, messages: 0, consumers: 0 },
    ]);
  });

  it('exits 1 when a database or the broker cannot be read, and says which', async () => {
    const text = await runStatus(false, { overrides: { NOTIFICATION_SVC_DB: 'no_such_database_here' }, exitCode: 1 });
    expect(text).toMatch(/no_such_database_here\s+unreachable: database "no_such_database_here" does not exist: check MONOLITH_DB and NOTIFICATION_SVC_DB/);
    expect(text).toMatch(/Backfills:\n(.*\n)*  no_such_database_here: unknown \(the database could not be read, above\)/);
    // A name longer than the column widens it for every row.
    const longName = 'no_such_database_with_a_long_name_here';
    const wide = await runStatus(false, { overrides: { NOTIFICATION_SVC_DB: longName }, exitCode: 1 });
    expect(wide).toContain(`  ${monolith.name.padEnd(longName.length)} `);
    expect(wide).toMatch(new RegExp(`\\n  ${monolith.name} {${longName.length - monolith.name.length + 1}}\\d+ unpublished`));
    const report = JSON.parse(await runStatus(true, { overrides: { AMQP_URL: 'amqp://guest:guest@127.0.0.1:1' }, exitCode: 1 }));
    expect(report.brokerError).toMatch(/ECONNREFUSED/);
  });

  it('gives up on a database or a broker that does not answer within --timeout, and says so', async () => {
    // A migration holding the outbox's lock: every statement on it waits.
    const trx = await monolith.knex.transaction();
    // A broker that accepts the connection and never answers.
    const silent = net.createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      await trx.raw('lock table outbox in access exclusive mode');
      const started = Date.now();
      const report = JSON.parse(await runStatus(true, { timeout: '1', exitCode: 1, overrides: { AMQP_URL: `amqp://guest:guest@127.0.0.1:${(silent.address() as net.AddressInfo).port}` } }));
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(report.outboxes.find((o: { database: string }) => o.database === monolith.name).error).toMatch(/statement timeout|the database did not answer within 1 s/);
      expect(report.outboxes.find((o: { database: string }) => o.database === service.name)).toMatchObject({ unpublished: 0 });
      expect(report.brokerError).toMatch(/did not answer within 1 s/);
    } finally {
      await trx.rollback();
      silent.close();
    }
    await expect(status.run({ positionals: [], values: { timeout: '0' } })).rejects.toThrow(/--timeout takes a number of seconds/);
  });
});
