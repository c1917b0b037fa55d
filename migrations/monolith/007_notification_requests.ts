import type { Knex } from 'knex';

/**
 * notification_requests: the durable forward queue of the gRPC notification transport. With
 * NOTIFICATION_TRANSPORT=grpc, `NotificationPort.send` inserts one row in the caller's (the
 * order's) transaction, so a request exists exactly when its order committed; the forwarder
 * calls the service's idempotent `Send` with `id` and deletes the row only once Send answered.
 *
 * `pending` rows wait for the forwarder (`next_attempt_at` defers a row after a failure that
 * may be the row's own, e.g. a deadline); `failed` rows are the service's refusals (4xx), kept
 * with the error for an operator: set them back to `pending` to retry. `request_id` and
 * `traceparent` carry the order request's context to the service.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table notification_requests (
      id uuid primary key,
      user_id uuid not null,
      channel text not null check (channel in ('email', 'sms', 'push')),
      template text not null,
      data jsonb not null default '{}',
      status text not null default 'pending' check (status in ('pending', 'failed')),
      attempts integer not null default 0,
      next_attempt_at timestamptz(3) not null default now(),
      last_error text,
      request_id text,
      traceparent text,
      created_at timestamptz(3) not null default now(),
      failed_at timestamptz(3),
      check ((status = 'failed') = (failed_at is not null))
    )`);
  await knex.raw(`create index notification_requests_due_idx on notification_requests (next_attempt_at, created_at) where status = 'pending'`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table if exists notification_requests');
}
