import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { recordEvent } from '../shared/events.ts';
import { paymentErrors } from './errors.ts';
import type { PaymentProvider } from './provider.ts';
import {
  applyRefund,
  findPayment,
  insertPayment,
  insertRefund,
  listPaymentsOfOrder,
  refundsOf,
  toPayment,
  toPaymentState,
  toRefund,
  type Payment,
  type PaymentRow,
  type Refund,
} from './repository.ts';

export interface ChargeInput {
  orderId: string;
  userId: string;
  amountCents: number;
  currency: string;
  token: string;
  now: Date;
}

/**
 * Payments: charges and refunds through the provider, inside the CALLER's transaction (the
 * monolith way: the order, its payment and its notification commit or roll back together).
 *
 * Failure modes: the provider call runs while the transaction holds its locks, bounded by
 * `timeoutMs`. On timeout the outcome is unknown, so PAYMENT_PROVIDER_TIMEOUT (504) aborts the
 * whole transaction; a retry reuses nothing stored, and the provider's idempotency key (the
 * payment id) is new, which is acceptable only because the fake provider moves no money. A
 * charge that succeeds while a LATER step of the transaction fails leaves a capture at the
 * provider with no payment row: a known hazard of this design that the extracted payment
 * service removes.
 */
export class PaymentService {
  constructor(
    private readonly db: Knex,
    private readonly provider: PaymentProvider,
    private readonly timeoutMs: number,
  ) {}

  /** Charges and records the payment (captured or declined), with its event. A timeout throws. */
  async charge(trx: Knex.Transaction, input: ChargeInput): Promise<Payment> {
    const id = randomUUID();
    const result = await this.withDeadline((signal) =>
      this.provider.charge({ paymentId: id, amountCents: input.amountCents, currency: input.currency, token: input.token }, signal),
    );
    const row = await insertPayment(trx, {
      id,
      order_id: input.orderId,
      user_id: input.userId,
      status: result.outcome,
      amount_cents: input.amountCents,
      currency: input.currency,
      decline_code: result.outcome === 'declined' ? result.declineCode : null,
      provider_reference: result.reference,
      created_at: input.now,
      updated_at: input.now,
    });
    await recordEvent(trx, 'payment', result.outcome === 'captured' ? 'payment.captured' : 'payment.declined', toPaymentState(row, []));
    return toPayment(row, []);
  }

  /** Refunds whatever is left on the order's payment (used by order cancellation); null if nothing is. */
  async refundRemainingOfOrder(trx: Knex.Transaction, orderId: string): Promise<Refund | null> {
    const payment = await findPayment(trx, { order_id: orderId }, { forUpdate: true });
    if (!payment || payment.status === 'declined' || payment.refunded_cents >= payment.amount_cents) return null;
    return this.refundLocked(trx, payment, payment.amount_cents - payment.refunded_cents);
  }

  /** POST /api/payments/:id/refunds: the caller's payment only; full refund of the rest by default. */
  async refund(callerId: string, paymentId: string, amountCents?: number): Promise<Refund> {
    return this.db.transaction(async (trx) => {
      const payment = await findPayment(trx, { id: paymentId }, { forUpdate: true });
      if (!payment || payment.user_id !== callerId) throw paymentErrors.PAYMENT_NOT_FOUND();
      const refundable = payment.status === 'declined' ? 0 : payment.amount_cents - payment.refunded_cents;
      if (refundable === 0) {
        throw paymentErrors.PAYMENT_NOT_REFUNDABLE(payment.status === 'declined' ? 'A declined payment cannot be refunded.' : 'This payment is already fully refunded.', { refundableCents: 0 });
      }
      const amount = amountCents ?? refundable;
      if (amount > refundable) throw paymentErrors.REFUND_EXCEEDS_PAYMENT(undefined, { refundableCents: refundable });
      return this.refundLocked(trx, payment, amount);
    });
  }

  async get(callerId: string, id: string): Promise<Payment> {
    const row = await findPayment(this.db, { id });
    if (!row || row.user_id !== callerId) throw paymentErrors.PAYMENT_NOT_FOUND();
    return toPayment(row, (await refundsOf(this.db, [id])).get(id)!);
  }

  /** The caller's payments of an order; another user's or an unknown order simply has none. */
  async listOfOrder(callerId: string, orderId: string): Promise<{ items: Payment[] }> {
    const rows = await listPaymentsOfOrder(this.db, callerId, orderId);
    const refunds = await refundsOf(this.db, rows.map((r) => r.id));
    return { items: rows.map((r) => toPayment(r, refunds.get(r.id)!)) };
  }

  private async refundLocked(trx: Knex.Transaction, payment: PaymentRow, amountCents: number): Promise<Refund> {
    const id = randomUUID();
    const now = new Date();
    const { reference } = await this.withDeadline((signal) =>
      this.provider.refund({ refundId: id, paymentReference: payment.provider_reference ?? payment.id, amountCents }, signal),
    );
    const refund = await insertRefund(trx, { id, payment_id: payment.id, amount_cents: amountCents, provider_reference: reference, created_at: now });
    const updated = await applyRefund(trx, payment, amountCents, now);
    const refunds = (await refundsOf(trx, [payment.id])).get(payment.id)!;
    await recordEvent(trx, 'payment', 'payment.refunded', toPaymentState(updated, refunds), { refund: toRefund(refund) });
    return toRefund(refund);
  }

  private async withDeadline<T>(call: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.timeoutMs);
    try {
      return await call(controller.signal);
    } catch (err) {
      if (timedOut) throw paymentErrors.PAYMENT_PROVIDER_TIMEOUT(undefined, { timeoutMs: this.timeoutMs }, { cause: err });
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }
}
