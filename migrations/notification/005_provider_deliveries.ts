import type { Knex } from 'knex';

/**
 * The fake provider's own log (FakeNotificationProvider): one row per call the fake gateway
 * received, appended on its own connection, outside the dispatcher's transaction, as a real
 * gateway would keep it. `delivered` rows are what recipients got: at most one per notification
 * (the partial unique index is the gateway's idempotency on the notification id); a repeated
 * call is logged as `duplicate` and answered with the first receipt. Tests read this table to
 * prove nothing is sent twice. A real provider adapter does not use it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table provider_deliveries (
      seq bigint generated always as identity primary key,
      notification_id uuid not null,
      outcome text not null check (outcome in ('delivered', 'duplicate', 'rejected')),
      channel text not null,
      template text not null,
      user_id uuid not null,
      recipient text,
      provider_message_id text,
      error text,
      at timestamptz(3) not null default now()
    )`);
  await knex.raw(`create unique index provider_deliveries_delivered_idx on provider_deliveries (notification_id) where outcome = 'delivered'`);
  await knex.raw('create index provider_deliveries_notification_idx on provider_deliveries (notification_id)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table if exists provider_deliveries');
}
