import { amqpEnv, closeAmqp, connectAmqp, createDb, loadConfig, settlesWithin, withTimeout, type ChannelModel, type Knex } from '@strangler/platform';
import { describeFailure, UsageError, type Command } from '../cli.ts';
import { databases, type DatabaseEntry } from '../databases.ts';
import { extractions } from '../extractions/index.ts';

interface OutboxStatus {
  database: string;
  unpublished: number | null;
  oldestUnpublishedSeconds: number | null;
  /** Unpublished because no queue is bound for their routing key yet, per event type. */
  unroutable: Record<string, number>;
  /** Unpublished because the broker or AMQP refused them for another reason: how many, and the first few. */
  refused: { count: number; first: Array<{ seq: number; eventType: string; error: string }> };
  error?: string;
}
interface QueueStatus {
  queue: string;
  /** null: not declared yet (or `error`). */
  messages: number | null;
  consumers: number | null;
  error?: string;
}
interface BackfillStatus {
  database: string;
  spec: string;
  done: boolean;
  copied: number;
  updatedAt: string;
}

/**
 * A database whose check does not finish within `timeoutMs` (a statement waiting behind a
 * migration's lock on the outbox, say) is reported unreachable; its statements time out too,
 * on the server, so they do not linger.
 */
async function outboxStatus(db: DatabaseEntry, timeoutMs: number): Promise<{ outbox: OutboxStatus; backfills: BackfillStatus[] }> {
  const knex = createDb(db.connection, { applicationName: 'strangler-status', pool: { max: 1 }, statementTimeoutMs: timeoutMs });
  try {
    return await withTimeout(outboxQueries(db, knex), timeoutMs, `the database did not answer within ${timeoutMs / 1_000} s`);
  } catch (err) {
    return { outbox: { database: db.name, unpublished: null, oldestUnpublishedSeconds: null, unroutable: {}, refused: { count: 0, first: [] }, error: describeFailure(err) }, backfills: [] };
  } finally {
    await settlesWithin(knex.destroy(), 1_000); // a statement still waiting holds it up
  }
}

async function outboxQueries(db: DatabaseEntry, knex: Knex): Promise<{ outbox: OutboxStatus; backfills: BackfillStatus[] }> {
  const { rows } = await knex.raw(
    // In two parts, each through its own partial index (createOutboxIndexes).
    `select count(*)::int as n, extract(epoch from now() - min(created_at))::float as age from (
       select created_at from outbox where published_at is null and next_attempt_at is null
       union all
       select created_at from outbox where published_at is null and next_attempt_at is not null) unpublished`,
  );
  const hasBackfill = (await knex.raw(`select to_regclass('strangler_backfill') is not null as present`)).rows[0].present;
  const backfills = hasBackfill
    ? ((await knex('strangler_backfill').select('spec', 'done', 'copied', 'updated_at').orderBy('spec')) as Array<{ spec: string; done: boolean; copied: number; updated_at: Date }>).map(
        (r) => ({ database: db.name, spec: r.spec, done: r.done, copied: Number(r.copied), updatedAt: r.updated_at.toISOString() }),
      )
    : [];
  const held = await knex.raw(
    `select event_type, count(*)::int as n from outbox where published_at is null and next_attempt_at is not null and last_error like 'unroutable%' group by event_type order by event_type`,
  );
  const unroutable = Object.fromEntries((held.rows as Array<{ event_type: string; n: number }>).map((r) => [r.event_type, r.n]));
  // Nacked, or over AMQP's limits (relay/publisher.ts): these need a person, not a deployment.
  const refusedRows = await knex.raw(
    `select seq, event_type, last_error, count(*) over ()::int as total from outbox
      where published_at is null and next_attempt_at is not null and last_error is not null and last_error not like 'unroutable%' order by seq limit 5`,
  );
  const first = (refusedRows.rows as Array<{ seq: number; event_type: string; last_error: string; total: number }>).map((r) => ({ seq: Number(r.seq), eventType: r.event_type, error: r.last_error }));
  const refused = { count: refusedRows.rows[0]?.total ?? 0, first };
  return { outbox: { database: db.name, unpublished: rows[0].n, oldestUnpublishedSeconds: rows[0].age === null ? null : Math.round(rows[0].age), unroutable, refused }, backfills };
}

/**
 * Each consumer's queue and parking queue, all read within `timeoutMs` (a broker that accepted the
 * connection and then stopped answering), or an error saying so.
 */
async function brokerStatus(consumers: string[], timeoutMs: number): Promise<QueueStatus[]> {
  const connecting = connectAmqp(loadConfig(amqpEnv).AMQP_URL, 'strangler-status');
  try {
    return await withTimeout(
      (async () => {
        const conn = await connecting;
        const queues: QueueStatus[] = [];
        for (const c of consumers) queues.push(await queueStatus(conn, `${c}.events`), await queueStatus(conn, `${c}.dead`));
        return queues;
      })(),
      timeoutMs,
      `the broker did not answer within ${timeoutMs / 1_000} s`,
    );
  } finally {
    // Also a connection that opens after the deadline.
    void connecting.then((c) => closeAmqp(c), () => {});
  }
}

/** Passive checks only: a missing queue is reported, never created. */
async function queueStatus(conn: ChannelModel, queue: string): Promise<QueueStatus> {
  const ch = await conn.createChannel();
  ch.on('error', () => {});
  try {
    const q = await ch.checkQueue(queue);
    return { queue, messages: q.messageCount, consumers: q.consumerCount };
  } catch (err) {
    if ((err as { code?: unknown }).code === 404) return { queue, messages: null, consumers: null };
    return { queue, messages: null, consumers: null, error: (err as Error).message };
  } finally {
    await ch.close().catch(() => {});
  }
}

export const command: Command = {
  summary: 'sync status: outbox lag per database, consumer and parking queues, backfill progress',
  usage: 'npm run strangler -- status [--json] [--timeout SECONDS]   (exits 1 when a database or the broker could not be read within the timeout, default 10 s)',
  options: { json: { type: 'boolean' }, timeout: { type: 'string' } },
  async run({ values }) {
    const timeoutSeconds = values.timeout === undefined ? 10 : Number(values.timeout);
    if (!(timeoutSeconds > 0 && timeoutSeconds <= 300)) throw new UsageError('--timeout takes a number of seconds above 0, at most 300.');
    const timeoutMs = Math.round(timeoutSeconds * 1_000);
    const dbs = Object.values(databases());
    const consumers = [...new Set((await Promise.all(Object.values(extractions).map((e) => e.consumers(process.env)))).flat())];
    let queues: QueueStatus[] = [];
    let brokerError: string | undefined;
    const [results] = await Promise.all([
      Promise.all(dbs.map((db) => outboxStatus(db, timeoutMs))),
      brokerStatus(consumers, timeoutMs).then(
        (q) => void (queues = q),
        (err: unknown) => void (brokerError = describeFailure(err)),
      ),
    ]);
    const report = { outboxes: results.map((r) => r.outbox), queues, backfills: results.flatMap((r) => r.backfills), brokerError };
    if (values.json) {
      console.log(JSON.stringify(report));
    } else {
      console.log('Outboxes (unpublished events, age of the oldest):');
      const w = Math.max(20, ...report.outboxes.map((o) => o.database.length));
      for (const o of report.outboxes) {
        console.log(`  ${o.database.padEnd(w)} ${o.error ? `unreachable: ${o.error}` : `${o.unpublished} unpublished${o.oldestUnpublishedSeconds === null ? '' : `, oldest ${o.oldestUnpublishedSeconds}s`}`}`);
        const held = Object.entries(o.unroutable);
        if (held.length) {
          const n = held.reduce((sum, [, c]) => sum + c, 0);
          console.log(`  ${''.padEnd(w)} of which ${n} held because no queue is bound for ${held.map(([t, c]) => `${t} (${c})`).join(', ')}:`);
          console.log(`  ${''.padEnd(w)} expected until a consumer of these events is deployed; the relay retries them after 2 s, 4 s, 8 s ... then every minute`);
        }
        if (o.refused.count) {
          console.log(`  ${''.padEnd(w)} of which ${o.refused.count} refused (retried after 2 s, 4 s, 8 s ... then every minute; fix or remove them, MIGRATION.md "Operate"), first:`);
          for (const r of o.refused.first) console.log(`  ${''.padEnd(w)}   seq ${r.seq} ${r.eventType.length > 60 ? `${r.eventType.slice(0, 60)}...` : r.eventType}: ${r.error}`);
        }
      }
      console.log('Queues (messages waiting, consumers):');
      if (brokerError) console.log(`  broker unreachable: ${brokerError}`);
      for (const q of queues) console.log(`  ${q.queue.padEnd(28)} ${q.error ? `unreadable: ${q.error}` : q.messages === null ? 'not declared yet' : `${q.messages} waiting, ${q.consumers} consumer(s)`}`);
      console.log('Backfills:');
      // Checkpoints live in the services' databases, never in the monolith's.
      const monolithDb = dbs.find((d) => d.owner === 'monolith')?.name;
      const unread = report.outboxes.filter((o) => o.error && o.database !== monolithDb).map((o) => o.database);
      if (!report.backfills.length && !unread.length) console.log('  none run yet');
      for (const database of unread) console.log(`  ${database}: unknown (the database could not be read, above)`);
      for (const b of report.backfills) console.log(`  ${`${b.database}/${b.spec}`.padEnd(34)} ${b.done ? 'complete' : 'in progress'}, ${b.copied} rows, ${b.updatedAt}`);
      const parked = queues.filter((q) => q.queue.endsWith('.dead') && (q.messages ?? 0) > 0);
      for (const p of parked) console.log(`\n${p.messages} parked message(s) in ${p.queue}: inspect with \`npm run strangler -- parked ${p.queue.replace(/\.dead$/, '')}\`.`);
    }
    // A report with holes is not a clean bill of health: scripts and probes must see it.
    return report.outboxes.some((o) => o.error) || brokerError || queues.some((q) => q.error) ? 1 : 0;
  },
};
