import type { Knex } from 'knex';
import { iso } from '../shared/json.ts';

export type PaymentStatus = 'captured' | 'declined' | 'partially_refunded' | 'refunded';

export interface PaymentRow {
  id: string;
  order_id: string;
  user_id: string;
  status: PaymentStatus;
  amount_cents: number;
  refunded_cents: number;
  currency: string;
  decline_code: string | null;
  provider_reference: string | null;
  version: number;
  created_at: Date;
  updated_at: Date;
}

export interface RefundRow {
  id: string;
  payment_id: string;
  amount_cents: number;
  provider_reference: string | null;
  created_at: Date;
}

export interface Refund {
  id: string;
  paymentId: string;
  amountCents: number;
  createdAt: string;
}

export interface Payment {
  id: string;
  orderId: string;
  userId: string;
  status: PaymentStatus;
  amountCents: number;
  refundedCents: number;
  currency: string;
  /** Why the provider declined (`card_declined`, `invalid_token`); null unless declined. */
  declineCode: string | null;
  refunds: Refund[];
  createdAt: string;
  updatedAt: string;
}

/** Full stored state for events: adds the provider references (needed to refund on the other side). */
export interface PaymentState extends Omit<Payment, 'refunds'> {
  providerReference: string | null;
  refunds: Array<Refund & { providerReference: string | null }>;
  version: number;
}

export const toRefund = (r: RefundRow): Refund => ({ id: r.id, paymentId: r.payment_id, amountCents: r.amount_cents, createdAt: iso(r.created_at) });

export const toPayment = (p: PaymentRow, refunds: RefundRow[]): Payment => ({
  id: p.id,
  orderId: p.order_id,
  userId: p.user_id,
  status: p.status,
  amountCents: p.amount_cents,
  refundedCents: p.refunded_cents,
  currency: p.currency,
  declineCode: p.decline_code,
  refunds: refunds.map(toRefund),
  createdAt: iso(p.created_at),
  updatedAt: iso(p.updated_at),
});

export const toPaymentState = (p: PaymentRow, refunds: RefundRow[]): PaymentState => ({
  ...toPayment(p, refunds),
  providerReference: p.provider_reference,
  refunds: refunds.map((r) => ({ ...toRefund(r), providerReference: r.provider_reference })),
  version: p.version,
});

export function insertPayment(trx: Knex.Transaction, row: Omit<PaymentRow, 'version' | 'refunded_cents'>): Promise<PaymentRow> {
  return trx<PaymentRow>('payments')
    .insert({ ...row, refunded_cents: 0, version: 1 })
    .returning('*')
    .then(([r]) => r!);
}

export async function findPayment(db: Knex, where: { id: string } | { order_id: string }, { forUpdate = false } = {}): Promise<PaymentRow | undefined> {
  const q = db<PaymentRow>('payments').where(where).orderBy('created_at').first();
  return forUpdate ? q.forUpdate() : q;
}

export function listPaymentsOfOrder(db: Knex, userId: string, orderId: string): Promise<PaymentRow[]> {
  return db<PaymentRow>('payments').where({ order_id: orderId, user_id: userId }).orderBy([{ column: 'created_at' }, { column: 'id' }]);
}

export async function refundsOf(db: Knex, paymentIds: string[]): Promise<Map<string, RefundRow[]>> {
  const out = new Map<string, RefundRow[]>(paymentIds.map((id) => [id, []]));
  if (!paymentIds.length) return out;
  const rows = await db<RefundRow>('refunds').whereIn('payment_id', paymentIds).orderBy([{ column: 'created_at' }, { column: 'id' }]);
  for (const r of rows) out.get(r.payment_id)!.push(r);
  return out;
}

export function insertRefund(trx: Knex.Transaction, row: RefundRow): Promise<RefundRow> {
  return trx<RefundRow>('refunds')
    .insert(row)
    .returning('*')
    .then(([r]) => r!);
}

/** Adds a refunded amount and bumps the version by one. */
export function applyRefund(trx: Knex.Transaction, payment: PaymentRow, amountCents: number, now: Date): Promise<PaymentRow> {
  const refunded = payment.refunded_cents + amountCents;
  return trx<PaymentRow>('payments')
    .where({ id: payment.id })
    .update({
      refunded_cents: refunded,
      status: refunded === payment.amount_cents ? 'refunded' : 'partially_refunded',
      updated_at: now,
      version: trx.raw('version + 1') as unknown as number,
    })
    .returning('*')
    .then(([r]) => r!);
}
