import type { Knex } from 'knex';

/**
 * Notifications, column for column the monolith's (migrations/monolith/005_notifications.ts), so
 * backfill, verify and the events in both directions copy rows without translation; and
 * notification_dispatch, the dispatcher's private work queue: one row per notification THIS
 * service still has to deliver. Only the writer of record delivers: a notification written here
 * (HTTP, gRPC) gets a dispatch row in the same transaction; one applied from a monolith event or
 * copied by the backfill never does. No foreign key to `users`: the projection may lag.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table notifications (
      id uuid primary key,
      user_id uuid not null,
      channel text not null check (channel in ('email', 'sms', 'push')),
      template text not null,
      data jsonb not null default '{}',
      status text not null check (status in ('queued', 'sent', 'failed')),
      failure_reason text,
      provider_message_id text,
      version integer not null default 1 check (version >= 1),
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      sent_at timestamptz(3)
    )`);
  await knex.raw('create index notifications_user_created_idx on notifications (user_id, created_at desc, id desc)');
  await knex.raw(`
    create table notification_dispatch (
      notification_id uuid primary key references notifications (id) on delete cascade,
      attempts integer not null default 0,
      next_attempt_at timestamptz(3) not null default now(),
      last_error text
    )`);
  await knex.raw('create index notification_dispatch_due_idx on notification_dispatch (next_attempt_at)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table if exists notification_dispatch');
  await knex.raw('drop table if exists notifications');
}
