import type { Knex } from 'knex';

/**
 * Orders and their items (one aggregate: items share the order's `version`). Money is integer
 * cents in bigint columns. The listing index matches the keyset query
 * `where user_id = ? and (created_at, id) < (?, ?) order by created_at desc, id desc`.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table orders (
      id uuid primary key,
      user_id uuid not null references users (id),
      status text not null check (status in ('placed', 'payment_failed', 'cancelled')),
      currency char(3) not null check (currency ~ '^[A-Z]{3}$'),
      total_cents bigint not null check (total_cents > 0),
      version integer not null default 1 check (version >= 1),
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      cancelled_at timestamptz(3),
      check ((status = 'cancelled') = (cancelled_at is not null))
    )`);
  await knex.raw('create index orders_user_created_idx on orders (user_id, created_at desc, id desc)');
  await knex.raw(`
    create table order_items (
      order_id uuid not null references orders (id) on delete cascade,
      position smallint not null check (position >= 0),
      sku text not null,
      quantity integer not null check (quantity > 0),
      unit_price_cents bigint not null check (unit_price_cents > 0),
      primary key (order_id, position)
    )`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table if exists order_items');
  await knex.raw('drop table if exists orders');
}
