import type { Knex } from 'knex';

/** LISTEN channel the outbox trigger notifies; one per database by nature of LISTEN/NOTIFY. */
export const OUTBOX_CHANNEL = 'strangler_outbox';

/** The trigger createOutboxXidTrigger installs; the relay looks for it (relay/claim.ts). */
export const OUTBOX_XID_TRIGGER = 'outbox_assign_xid';

/**
 * The outbox table (DESIGN.md "Events"), the same in every database that publishes, plus the
 * one-row `outbox_relay` table through which the relay steers the NOTIFY trigger.
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
  await knex.raw('drop table if exists outbox');
  await knex.raw('drop table if exists outbox_relay');
  await knex.raw('drop function if exists outbox_notify()');
  await knex.raw('drop function if exists outbox_assign_xid()');
}
