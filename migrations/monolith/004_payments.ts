import type { Knex } from 'knex';

/**
 * Payments and their refunds (one aggregate: refunds share the payment's `version`).
 *
 * `payments.order_id` is DEFERRABLE INITIALLY DEFERRED: placing an order charges first and
 * writes the order second (its status depends on the charge), all in one transaction, so the
 * reference is checked at commit.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table payments (
      id uuid primary key,
      order_id uuid not null references orders (id) deferrable initially deferred,
      user_id uuid not null references users (id),
      status text not null check (status in ('captured', 'declined', 'partially_refunded', 'refunded')),
      amount_cents bigint not null check (amount_cents > 0),
      refunded_cents bigint not null default 0 check (refunded_cents >= 0 and refunded_cents <= amount_cents),
      currency char(3) not null,
      decline_code text,
      provider_reference text,
      version integer not null default 1 check (version >= 1),
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now()
    )`);
  await knex.raw('create index payments_order_idx on payments (order_id)');
  await knex.raw('create index payments_user_created_idx on payments (user_id, created_at desc, id desc)');
  await knex.raw(`
    create table refunds (
      id uuid primary key,
      payment_id uuid not null references payments (id) on delete cascade,
      amount_cents bigint not null check (amount_cents > 0),
      provider_reference text,
      created_at timestamptz(3) not null default now()
    )`);
  await knex.raw('create index refunds_payment_idx on refunds (payment_id, created_at, id)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table if exists refunds');
  await knex.raw('drop table if exists payments');
}
