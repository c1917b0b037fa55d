import { randomBytes, randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import pg from 'pg';
import { createLogger } from '@strangler/platform';
import { hashPassword } from '@strangler/monolith';
import { databases, type DatabaseEntry } from './databases.ts';
import { migrateAll } from './migrate.ts';

/**
 * `npm run seed -- [--users N] [--orders N]`: bulk-imports realistic legacy data into the
 * monolith database (MONOLITH_DB, default `monolith`), creating and migrating it first.
 *
 * A bulk import, not traffic: every row is written at version 1 in its final state
 * (cancelled orders arrive cancelled with their refund, notifications arrive `sent`) and NO
 * outbox events are written. Services get historical data through backfill (`strangler
 * backfill`), not through the outbox; seeding 50k orders must not flood the relay.
 *
 * Every seeded user's password is `password123` (one precomputed scrypt hash shared by all, so
 * seeding stays fast and any seeded user can log in). Emails are unique per run
 * (`<first>.<last>.<run tag><n>@example.com`), so seeding twice adds data instead of failing.
 *
 * Speed: one transaction; each statement inserts a whole batch through `unnest` of one array
 * per column (a fixed 5-14 parameters however many rows), 2,000 orders per batch.
 */
export const SEED_PASSWORD = 'password123';

export interface SeedOptions {
  database: DatabaseEntry;
  users: number;
  orders: number;
  /** Show a progress bar on stderr (only drawn on a terminal). */
  progress?: boolean;
}

export interface SeedReport {
  users: number;
  orders: number;
  orderItems: number;
  payments: number;
  refunds: number;
  notifications: number;
  seconds: number;
  sampleEmail: string | null;
}

const FIRST = ['ada', 'alan', 'grace', 'linus', 'margaret', 'ken', 'barbara', 'edsger', 'frances', 'donald', 'radia', 'tim', 'hedy', 'john', 'sophie', 'dennis'];
const LAST = ['lovelace', 'turing', 'hopper', 'torvalds', 'hamilton', 'thompson', 'liskov', 'dijkstra', 'allen', 'knuth', 'perlman', 'berners', 'lamarr', 'backus', 'wilson', 'ritchie'];
const CURRENCIES = ['EUR', 'EUR', 'EUR', 'USD', 'USD', 'GBP'];
const ORDER_BATCH = 2_000;
const USER_BATCH = 5_000;
const DAY = 86_400_000;

const int = (min: number, max: number) => min + Math.floor(Math.random() * (max - min + 1));
const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)]!;
const cap = (s: string) => s[0]!.toUpperCase() + s.slice(1);
const hex = (id: string) => id.replaceAll('-', '');

/** Columns -> arrays, inserted with one `insert ... select * from unnest(...)` statement. */
async function insertColumns(client: pg.ClientBase, table: string, columns: Record<string, { type: string; values: unknown[] }>): Promise<void> {
  const names = Object.keys(columns);
  const casts = names.map((n, i) => `$${i + 1}::${columns[n]!.type}[]`).join(', ');
  await client.query(`insert into ${table} (${names.join(', ')}) select * from unnest(${casts})`, names.map((n) => columns[n]!.values));
}

export async function seed({ database, users, orders, progress = true }: SeedOptions): Promise<SeedReport> {
  if (orders > 0 && users < 1) throw new Error('Orders need users: pass --users 1 or more.');
  const started = performance.now();
  const passwordHash = await hashPassword(SEED_PASSWORD);
  const tag = randomBytes(3).toString('hex');
  const now = Date.now();
  const bar = new cliProgress.SingleBar({ format: 'seeding {bar} {percentage}% | {value}/{total} users+orders | {duration}s', hideCursor: true }, cliProgress.Presets.shades_classic);
  if (progress) bar.start(users + orders, 0);

  const client = new pg.Client({ ...database.connection, application_name: 'strangler-seed' });
  await client.connect();
  const report: SeedReport = { users, orders, orderItems: 0, payments: 0, refunds: 0, notifications: 0, seconds: 0, sampleEmail: null };
  try {
    await client.query('begin');
    // Users: created over the last two years.
    const userIds: string[] = [];
    const userCreated: number[] = [];
    for (let start = 0; start < users; start += USER_BATCH) {
      const n = Math.min(USER_BATCH, users - start);
      const ids: string[] = [], emails: string[] = [], names: string[] = [], created: string[] = [];
      for (let i = 0; i < n; i++) {
        const first = pick(FIRST), last = pick(LAST);
        const id = randomUUID();
        const at = now - int(30, 730) * DAY - int(0, DAY);
        ids.push(id);
        emails.push(`${first}.${last}.${tag}${start + i}@example.com`);
        names.push(`${cap(first)} ${cap(last)}`);
        created.push(new Date(at).toISOString());
        userIds.push(id);
        userCreated.push(at);
      }
      report.sampleEmail ??= emails[0]!;
      await insertColumns(client, 'users', {
        id: { type: 'uuid', values: ids },
        email: { type: 'text', values: emails },
        name: { type: 'text', values: names },
        password_hash: { type: 'text', values: ids.map(() => passwordHash) },
        version: { type: 'int', values: ids.map(() => 1) },
        created_at: { type: 'timestamptz', values: created },
        updated_at: { type: 'timestamptz', values: created },
      });
      if (progress) bar.increment(n);
    }

    // Orders with their items, payment, refund (if cancelled) and notifications, in batches.
    for (let start = 0; start < orders; start += ORDER_BATCH) {
      const n = Math.min(ORDER_BATCH, orders - start);
      const o = { id: [] as string[], user: [] as string[], status: [] as string[], currency: [] as string[], total: [] as number[], created: [] as string[], updated: [] as string[], cancelled: [] as (string | null)[] };
      const it = { order: [] as string[], position: [] as number[], sku: [] as string[], qty: [] as number[], price: [] as number[] };
      const p = { id: [] as string[], order: [] as string[], user: [] as string[], status: [] as string[], amount: [] as number[], refunded: [] as number[], currency: [] as string[], decline: [] as (string | null)[], ref: [] as string[], created: [] as string[], updated: [] as string[] };
      const r = { id: [] as string[], payment: [] as string[], amount: [] as number[], ref: [] as string[], created: [] as string[] };
      const nt = { id: [] as string[], user: [] as string[], template: [] as string[], data: [] as string[], msg: [] as string[], created: [] as string[], sent: [] as string[] };
      const notify = (userId: string, template: string, data: Record<string, unknown>, at: number) => {
        const id = randomUUID();
        nt.id.push(id); nt.user.push(userId); nt.template.push(template); nt.data.push(JSON.stringify(data)); nt.msg.push(`email_${hex(id)}`);
        nt.created.push(new Date(at).toISOString()); nt.sent.push(new Date(at + int(200, 5_000)).toISOString());
      };
      for (let i = 0; i < n; i++) {
        const u = int(0, users - 1);
        const userId = userIds[u]!;
        const id = randomUUID();
        const createdAt = userCreated[u]! + Math.floor(Math.random() * (now - userCreated[u]! - DAY));
        const roll = Math.random();
        const status = roll < 0.04 ? 'payment_failed' : roll < 0.12 ? 'cancelled' : 'placed';
        const currency = pick(CURRENCIES);
        let total = 0;
        const lines = int(1, 4);
        for (let l = 0; l < lines; l++) {
          const qty = int(1, 3), price = int(199, 19_999);
          total += qty * price;
          it.order.push(id); it.position.push(l); it.sku.push(`SKU-${int(10_000, 10_999)}`); it.qty.push(qty); it.price.push(price);
        }
        const cancelledAt = status === 'cancelled' ? createdAt + int(60_000, 3 * DAY) : null;
        o.id.push(id); o.user.push(userId); o.status.push(status); o.currency.push(currency); o.total.push(total);
        o.created.push(new Date(createdAt).toISOString());
        o.updated.push(new Date(cancelledAt ?? createdAt).toISOString());
        o.cancelled.push(cancelledAt === null ? null : new Date(cancelledAt).toISOString());

        const paymentId = randomUUID();
        p.id.push(paymentId); p.order.push(id); p.user.push(userId); p.amount.push(total); p.currency.push(currency);
        p.status.push(status === 'payment_failed' ? 'declined' : status === 'cancelled' ? 'refunded' : 'captured');
        p.refunded.push(status === 'cancelled' ? total : 0);
        p.decline.push(status === 'payment_failed' ? 'card_declined' : null);
        p.ref.push(`ch_${hex(paymentId)}`);
        p.created.push(new Date(createdAt).toISOString());
        p.updated.push(new Date(cancelledAt ?? createdAt).toISOString());
        notify(userId, status === 'payment_failed' ? 'order_payment_failed' : 'order_placed', { orderId: id, totalCents: total, currency }, createdAt);
        if (cancelledAt !== null) {
          const refundId = randomUUID();
          r.id.push(refundId); r.payment.push(paymentId); r.amount.push(total); r.ref.push(`re_${hex(refundId)}`); r.created.push(new Date(cancelledAt).toISOString());
          notify(userId, 'order_cancelled', { orderId: id, refundedCents: total, currency }, cancelledAt);
        }
      }
      await insertColumns(client, 'orders', {
        id: { type: 'uuid', values: o.id }, user_id: { type: 'uuid', values: o.user }, status: { type: 'text', values: o.status },
        currency: { type: 'text', values: o.currency }, total_cents: { type: 'bigint', values: o.total }, version: { type: 'int', values: o.id.map(() => 1) },
        created_at: { type: 'timestamptz', values: o.created }, updated_at: { type: 'timestamptz', values: o.updated }, cancelled_at: { type: 'timestamptz', values: o.cancelled },
      });
      await insertColumns(client, 'order_items', {
        order_id: { type: 'uuid', values: it.order }, position: { type: 'smallint', values: it.position }, sku: { type: 'text', values: it.sku },
        quantity: { type: 'int', values: it.qty }, unit_price_cents: { type: 'bigint', values: it.price },
      });
      await insertColumns(client, 'payments', {
        id: { type: 'uuid', values: p.id }, order_id: { type: 'uuid', values: p.order }, user_id: { type: 'uuid', values: p.user }, status: { type: 'text', values: p.status },
        amount_cents: { type: 'bigint', values: p.amount }, refunded_cents: { type: 'bigint', values: p.refunded }, currency: { type: 'text', values: p.currency },
        decline_code: { type: 'text', values: p.decline }, provider_reference: { type: 'text', values: p.ref }, version: { type: 'int', values: p.id.map(() => 1) },
        created_at: { type: 'timestamptz', values: p.created }, updated_at: { type: 'timestamptz', values: p.updated },
      });
      if (r.id.length) {
        await insertColumns(client, 'refunds', {
          id: { type: 'uuid', values: r.id }, payment_id: { type: 'uuid', values: r.payment }, amount_cents: { type: 'bigint', values: r.amount },
          provider_reference: { type: 'text', values: r.ref }, created_at: { type: 'timestamptz', values: r.created },
        });
      }
      await insertColumns(client, 'notifications', {
        id: { type: 'uuid', values: nt.id }, user_id: { type: 'uuid', values: nt.user }, channel: { type: 'text', values: nt.id.map(() => 'email') },
        template: { type: 'text', values: nt.template }, data: { type: 'jsonb', values: nt.data }, status: { type: 'text', values: nt.id.map(() => 'sent') },
        provider_message_id: { type: 'text', values: nt.msg }, version: { type: 'int', values: nt.id.map(() => 1) },
        created_at: { type: 'timestamptz', values: nt.created }, updated_at: { type: 'timestamptz', values: nt.sent }, sent_at: { type: 'timestamptz', values: nt.sent },
      });
      report.orderItems += it.order.length;
      report.payments += p.id.length;
      report.refunds += r.id.length;
      report.notifications += nt.id.length;
      if (progress) bar.increment(n);
    }
    await client.query('commit');
  } catch (err) {
    await client.query('rollback').catch(() => {});
    throw err;
  } finally {
    if (progress) bar.stop();
    await client.end();
  }
  report.seconds = Math.round((performance.now() - started) / 10) / 100;
  return report;
}

const USAGE = 'Usage: npm run seed -- [--users N (default 10000)] [--orders N (default 50000)]   (database: MONOLITH_DB, default monolith)';

function count(value: string | undefined, fallback: number, flag: string): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new Error(`${flag} must be a whole number, got "${value}".\n${USAGE}`);
  return Number(value);
}

export async function main(argv: string[]): Promise<number> {
  const log = createLogger('seed');
  let users: number, orders: number;
  try {
    const { values } = parseArgs({ args: argv, options: { users: { type: 'string' }, orders: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    users = count(values.users, 10_000, '--users');
    orders = count(values.orders, 50_000, '--orders');
  } catch (err) {
    console.error((err as Error).message.includes('Usage') ? (err as Error).message : `${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const database = databases().monolith;
  await migrateAll([database]);
  const report = await seed({ database, users, orders, progress: true });
  log.info({ database: database.name, ...report }, 'seeded');
  console.log(
    `Seeded ${report.users} users, ${report.orders} orders (${report.orderItems} items, ${report.payments} payments, ${report.refunds} refunds, ` +
      `${report.notifications} notifications) into "${database.name}" in ${report.seconds.toFixed(2)} s. ` +
      `No outbox events were written (rows are version 1). Log in as ${report.sampleEmail ?? '(no users)'} / ${SEED_PASSWORD}.`,
  );
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(`seed failed: ${(err as Error).message}`);
      process.exit(1);
    },
  );
}
