import type { Knex } from 'knex';
import type { Cursor } from '../shared/pagination.ts';
import { iso, isoOrNull } from '../shared/json.ts';

export type OrderStatus = 'placed' | 'payment_failed' | 'cancelled';

export interface OrderRow {
  id: string;
  user_id: string;
  status: OrderStatus;
  currency: string;
  total_cents: number;
  version: number;
  created_at: Date;
  updated_at: Date;
  cancelled_at: Date | null;
}

export interface OrderItemRow {
  order_id: string;
  position: number;
  sku: string;
  quantity: number;
  unit_price_cents: number;
}

export interface OrderItem {
  sku: string;
  quantity: number;
  unitPriceCents: number;
}

export interface Order {
  id: string;
  userId: string;
  status: OrderStatus;
  currency: string;
  items: OrderItem[];
  totalCents: number;
  createdAt: string;
  updatedAt: string;
  /** Null unless status is `cancelled`. */
  cancelledAt: string | null;
}

export interface OrderState extends Order {
  version: number;
}

const toItem = (r: OrderItemRow): OrderItem => ({ sku: r.sku, quantity: r.quantity, unitPriceCents: r.unit_price_cents });

export const toOrder = (o: OrderRow, items: OrderItemRow[]): Order => ({
  id: o.id,
  userId: o.user_id,
  status: o.status,
  currency: o.currency,
  items: items.map(toItem),
  totalCents: o.total_cents,
  createdAt: iso(o.created_at),
  updatedAt: iso(o.updated_at),
  cancelledAt: isoOrNull(o.cancelled_at),
});

export const toOrderState = (o: OrderRow, items: OrderItemRow[]): OrderState => ({ ...toOrder(o, items), version: o.version });

export async function insertOrder(trx: Knex.Transaction, order: Omit<OrderRow, 'version' | 'cancelled_at'>, items: OrderItem[]): Promise<{ order: OrderRow; items: OrderItemRow[] }> {
  const [row] = await trx<OrderRow>('orders')
    .insert({ ...order, version: 1 })
    .returning('*');
  const itemRows = await trx<OrderItemRow>('order_items')
    .insert(items.map((it, position) => ({ order_id: order.id, position, sku: it.sku, quantity: it.quantity, unit_price_cents: it.unitPriceCents })))
    .returning('*');
  return { order: row!, items: itemRows.sort((a, b) => a.position - b.position) };
}

export async function findOrder(db: Knex, id: string, { forUpdate = false } = {}): Promise<OrderRow | undefined> {
  const q = db<OrderRow>('orders').where({ id }).first();
  return forUpdate ? q.forUpdate() : q;
}

export async function itemsOf(db: Knex, orderIds: string[]): Promise<Map<string, OrderItemRow[]>> {
  const out = new Map<string, OrderItemRow[]>(orderIds.map((id) => [id, []]));
  if (!orderIds.length) return out;
  const rows = await db<OrderItemRow>('order_items').whereIn('order_id', orderIds).orderBy([{ column: 'order_id' }, { column: 'position' }]);
  for (const r of rows) out.get(r.order_id)!.push(r);
  return out;
}

/** The user's orders, newest first, after `cursor`; `limit + 1` rows to tell whether more follow. */
export function listOrders(db: Knex, userId: string, limit: number, cursor?: Cursor): Promise<OrderRow[]> {
  const q = db<OrderRow>('orders')
    .where({ user_id: userId })
    .orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }])
    .limit(limit + 1);
  if (cursor) q.whereRaw('(created_at, id) < (?::timestamptz, ?::uuid)', [cursor.createdAt, cursor.id]);
  return q;
}

export function markCancelled(trx: Knex.Transaction, id: string, now: Date): Promise<OrderRow> {
  return trx<OrderRow>('orders')
    .where({ id })
    .update({ status: 'cancelled', cancelled_at: now, updated_at: now, version: trx.raw('version + 1') as unknown as number })
    .returning('*')
    .then(([r]) => r!);
}

/** Reads the users module's table directly, as monolith modules do. */
export async function userExists(db: Knex, userId: string): Promise<boolean> {
  return !!(await db('users').where({ id: userId }).first('id'));
}
