import type { Knex } from 'knex';

/** LISTEN channel the outbox trigger notifies; one per database by nature of LISTEN/NOTIFY. */
export const OUTBOX_CHANNEL = 'strangler_outbox';

/** The trigger createOutboxXidTrigger installs; the relay looks for it (relay/claim.ts). */
export const OUTBOX_XID_TRIGGER = 'outbox_assign_xid';

/**
 * The outbox table (DESIGN.md "Events"), the same in every database that publishes, plus the
 * one-row `outbox_relay` table through which the relay steers the NOTIFY trigger, and
 * `outbox_published`, where the relay moves the rows it published (createOutboxPublished).
 *
 * `seq` orders rows by insertion, not by commit: a transaction can commit after rows with a
 * higher `seq`. So the relay never keeps a high-water mark; it publishes every row whose
 * `published_at` is null, through a partial index (createOutboxIndexes), starting from a floor
 * it proves safe with transaction ids (createOutboxXidTrigger). A row whose publication failed
 * (unroutable, nacked) waits until `next_attempt_at`.
 *
 * The statement-level trigger sends one NOTIFY per inserting statement (Postgres folds
 * duplicates within a transaction). Postgres serialises notifying commits (they hold a
 * database-wide lock through the WAL flush, so group commit stops working): measured on
 * 2 cores, 16 clients, 4,700 commits/s without and 2,800 with a NOTIFY in each. So it only
 * fires while the relay wants waking: the leader clears `outbox_relay.notify` while it is
 * busy polling anyway and sets it when it goes idle. A session or database can also switch it
 * off for good: `set strangler.outbox_notify = 'off'`; the relay's poll then carries the load.
 */
export async function createOutboxSchema(knex: Knex): Promise<void> {
  await knex.schema.createTable('outbox', (t) => {
    t.uuid('id').primary();
    t.specificType('seq', 'bigint generated always as identity').notNullable().unique();
    t.text('aggregate_type').notNullable();
    t.text('aggregate_id').notNullable();
    t.integer('aggregate_version').notNullable();
    t.text('event_type').notNullable();
    t.jsonb('payload').notNullable();
    t.jsonb('headers').notNullable().defaultTo('{}');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('published_at', { useTz: true });
    t.integer('attempts').notNullable().defaultTo(0);
    t.text('last_error');
    t.timestamp('next_attempt_at', { useTz: true });
  });
  await createOutboxIndexes(knex);
  // For retention of rows marked published where they were (a relay without outbox_published).
  await knex.raw('create index outbox_published_at_idx on outbox (published_at) where published_at is not null');
  await knex.raw('create unique index outbox_aggregate_version_idx on outbox (aggregate_type, aggregate_id, aggregate_version)');
  await knex.schema.createTable('outbox_relay', (t) => {
    t.smallint('id').primary().defaultTo(1).checkIn(['1']);
    t.boolean('notify').notNullable().defaultTo(true);
    t.text('leader');
    t.timestamp('leader_since', { useTz: true });
  });
  await knex('outbox_relay').insert({ id: 1 });
  await knex.raw(`
    create function outbox_notify() returns trigger language plpgsql as $$
    begin
      if coalesce(current_setting('strangler.outbox_notify', true), 'on') <> 'off'
         and coalesce((select notify from outbox_relay where id = 1), true) then
        perform pg_notify('${OUTBOX_CHANNEL}', '');
      end if;
      return null;
    end $$`);
  await knex.raw('create trigger outbox_notify after insert on outbox for each statement execute function outbox_notify()');
  await createOutboxXidTrigger(knex);
  await createOutboxPublished(knex);
}

/** Where the relay moves the rows it published (createOutboxPublished). */
export const OUTBOX_PUBLISHED = 'outbox_published';

/**
 * `outbox_published`: the rows the relay published, moved out of `outbox` by the statement that
 * records their confirms (relay/claim.ts), with `published_at` and `attempts`, and deleted by
 * retention (`RELAY_RETENTION_HOURS`). `outbox` then holds only what is still to publish.
 *
 * Why move them rather than mark them in place: marking updates each row, a new row version
 * with an entry in each of the outbox's four indexes, in the pages the writers are inserting
 * into; moving is a delete (no index entry) and an insert into a table with one BRIN index.
 * Measured here with pgbench writers (bench/outbox.ts has the end-to-end figures): marking
 * in place cost the writers ~10% of their commits/s, moving ~2%. The move copies a payload
 * Postgres stored out of line (TOAST, from ~2 kB) where an update kept it: large events cost more
 * to publish this way.
 *
 * No unique or primary key: the move must never fail. So `outbox_aggregate_version_idx` refuses
 * a version appended twice only while the first is unpublished; after that, consumers' version
 * rule takes the second for stale. Look rows up by `published_at` (the BRIN index) or add the
 * index your queries need.
 *
 * Idempotent (migrations monolith 103, notification 008). A relay finds it at each lease and full
 * scan; without it, the relay marks rows published where they are, as it did before.
 */
export async function createOutboxPublished(knex: Knex): Promise<void> {
  await knex.raw(`
    create table if not exists ${OUTBOX_PUBLISHED} (
      id uuid not null,
      seq bigint not null,
      aggregate_type text not null,
      aggregate_id text not null,
      aggregate_version integer not null,
      event_type text not null,
      payload jsonb not null,
      headers jsonb not null,
      created_at timestamptz not null,
      published_at timestamptz not null,
      attempts integer not null)`);
  await knex.raw(`create index if not exists ${OUTBOX_PUBLISHED}_published_at_idx on ${OUTBOX_PUBLISHED} using brin (published_at)`);
}

/**
 * Undoes createOutboxPublished: its rows go back to `outbox`, marked published (retention deletes
 * them there), and the table is dropped. Stop the relays first, or start them again after: a
 * relay that found the table marks through it until its next full scan.
 */
export async function dropOutboxPublished(knex: Knex): Promise<void> {
  if (!(await knex.schema.hasTable(OUTBOX_PUBLISHED))) return;
  await knex.raw(`
    insert into outbox (id, seq, aggregate_type, aggregate_id, aggregate_version, event_type, payload, headers, created_at, published_at, attempts)
      overriding system value
      select id, seq, aggregate_type, aggregate_id, aggregate_version, event_type, payload, headers, created_at, published_at, attempts from ${OUTBOX_PUBLISHED}
      on conflict do nothing`);
  await knex.raw(`drop table ${OUTBOX_PUBLISHED}`);
}

/**
 * Makes every transaction that inserts into the outbox take its transaction id before it draws
 * a `seq` (a BEFORE ... FOR EACH STATEMENT trigger fires before the statement computes its
 * rows). The relay relies on it to start its claims above the rows it has published
 * (relay/claim.ts, ClaimFloor), and uses no floor on an outbox without it.
 *
 * Why the claims need a floor: publishing a row updates it, so `outbox_pending_idx` keeps one
 * dead entry per published row until VACUUM removes it, and a claim that starts at the lowest
 * `seq` steps over all of them. Measured here with autovacuum off: 0.5 ms per claim after
 * 100,000 published rows, 2.4 ms after 1,000,000; autovacuum with default settings lets a
 * large outbox gather that many between its runs, and a long transaction holds it off.
 *
 * Idempotent: creates or replaces the function and the trigger (migrations that add it to an
 * existing outbox: monolith 102, notification 007).
 */
export async function createOutboxXidTrigger(knex: Knex): Promise<void> {
  await knex.raw(`
    create or replace function outbox_assign_xid() returns trigger language plpgsql as $$
    begin
      perform pg_current_xact_id();
      return null;
    end $$`);
  await knex.raw(`create or replace trigger ${OUTBOX_XID_TRIGGER} before insert on outbox for each statement execute function outbox_assign_xid()`);
  // Also for writers with session_replication_role = replica (bulk loads, replication tools).
  await knex.raw(`alter table outbox enable always trigger ${OUTBOX_XID_TRIGGER}`);
}

/** Undoes createOutboxXidTrigger: the relay then claims from the lowest `seq` again. */
export async function dropOutboxXidTrigger(knex: Knex): Promise<void> {
  await knex.raw(`drop trigger if exists ${OUTBOX_XID_TRIGGER} on outbox`);
  await knex.raw('drop function if exists outbox_assign_xid()');
}

/**
 * The indexes the relay claims through. A row waits in one of two partial indexes until it is
 * published: `outbox_pending_idx` (by `seq`) while no publication has failed, `outbox_retry_idx`
 * (by `next_attempt_at`) once one has. So a claim walks only what is due: refused rows waiting
 * for their retry (an event type nobody has bound a queue to yet can gather thousands of them)
 * cost a claim nothing until their time comes.
 *
 * Idempotent, for existing outboxes too (they had one `outbox_unpublished_idx` for both kinds,
 * dropped once the new ones are valid): with `concurrently`, the indexes are built without
 * blocking writes, which needs a migration that runs outside a transaction; a build that was
 * interrupted is redone by the next run.
 */
export async function createOutboxIndexes(knex: Knex, { concurrently = false } = {}): Promise<void> {
  const c = concurrently ? 'concurrently' : '';
  const indexes = {
    outbox_pending_idx: 'on outbox (seq) where published_at is null and next_attempt_at is null',
    outbox_retry_idx: 'on outbox (next_attempt_at) where published_at is null and next_attempt_at is not null',
  };
  for (const [name, definition] of Object.entries(indexes)) {
    // A concurrent build that was interrupted (a timeout, a cancel, a restart) leaves an invalid
    // index behind, which `if not exists` would keep: built again instead.
    if ((await indexValid(knex, name)) === false) await knex.raw(`drop index ${c} ${name}`);
    await knex.raw(`create index ${c} if not exists ${name} ${definition}`);
    if (!(await indexValid(knex, name))) throw new Error(`Index ${name} on outbox is not valid after it was built: run the migration again.`);
  }
  // Only once the claim can use the new ones.
  await knex.raw(`drop index ${c} if exists outbox_unpublished_idx`);
}

/** Undoes createOutboxIndexes on an outbox that had them built by a migration: back to one claim index. */
export async function dropOutboxIndexes(knex: Knex, { concurrently = false } = {}): Promise<void> {
  const c = concurrently ? 'concurrently' : '';
  await knex.raw(`create index ${c} if not exists outbox_unpublished_idx on outbox (seq) where published_at is null`);
  await knex.raw(`drop index ${c} if exists outbox_pending_idx`);
  await knex.raw(`drop index ${c} if exists outbox_retry_idx`);
}

/** Whether the index `name` (in the current schema) is valid; null if there is none. */
async function indexValid(knex: Knex, name: string): Promise<boolean | null> {
  const { rows } = await knex.raw<{ rows: Array<{ valid: boolean }> }>(
    `select i.indisvalid as valid from pg_index i join pg_class c on c.oid = i.indexrelid
      where c.relname = ? and c.relnamespace = current_schema()::regnamespace`,
    [name],
  );
  return rows[0]?.valid ?? null;
}

export async function dropOutboxSchema(knex: Knex): Promise<void> {
  await knex.raw(`drop table if exists ${OUTBOX_PUBLISHED}`);
  await knex.raw('drop table if exists outbox');
  await knex.raw('drop table if exists outbox_relay');
  await knex.raw('drop function if exists outbox_notify()');
  await knex.raw('drop function if exists outbox_assign_xid()');
}
