import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { commonErrors } from '@strangler/platform';
import { recordEvent } from '../shared/events.ts';
import { canonicalJson, sha256 } from '../shared/json.ts';
import { toPage, type Page, type PageQuery } from '../shared/pagination.ts';
import type { NotificationPort } from '../notifications/port.ts';
import { paymentErrors } from '../payments/errors.ts';
import type { PaymentService } from '../payments/service.ts';
import { orderErrors } from './errors.ts';
import { claimKey, completeKey } from './idempotency.ts';
import { findOrder, insertOrder, itemsOf, listOrders, markCancelled, toOrder, toOrderState, userExists, type Order } from './repository.ts';
import type { PlaceOrderInput } from './schemas.ts';

/** What POST /api/orders answers: 201 with the order, or 402 with PAYMENT_DECLINED. */
export interface PlaceResult {
  status: 201 | 402;
  body: unknown;
  /** True when the answer is a stored response replayed for a repeated Idempotency-Key. */
  replayed: boolean;
}

/**
 * Orders: the module that shows the monolith's habits. Placing an order runs ONE transaction
 * across modules: idempotency key, charge (payments module, which calls the provider while the
 * transaction is open), order and items, notification (through NotificationPort), and one
 * outbox event per entity written. Any failure rolls all of it back.
 *
 * A DECLINED payment is a business outcome, not a failure: the order is kept with status
 * `payment_failed` next to its `declined` payment (so support can see the attempt and the
 * user is told), the transaction commits, and the answer is 402 PAYMENT_DECLINED with the
 * ids in `details`. A provider TIMEOUT is a failure: nothing is kept and the answer is 504
 * PAYMENT_PROVIDER_TIMEOUT, so the client can retry with the same Idempotency-Key.
 */
export class OrderService {
  constructor(
    private readonly db: Knex,
    private readonly payments: PaymentService,
    private readonly notifications: NotificationPort,
  ) {}

  async place(userId: string, input: PlaceOrderInput, idempotencyKey?: string): Promise<PlaceResult> {
    const requestHash = sha256(canonicalJson({ method: 'POST', path: '/api/orders', body: input }));
    return this.db.transaction(async (trx) => {
      if (idempotencyKey) {
        const claim = await claimKey(trx, userId, idempotencyKey, requestHash);
        if (claim.kind === 'mismatch') throw orderErrors.IDEMPOTENCY_KEY_REUSED();
        if (claim.kind === 'replay') return { status: claim.status as 201 | 402, body: claim.body, replayed: true };
      }
      if (!(await userExists(trx, userId))) throw commonErrors.UNAUTHENTICATED('The user of this token does not exist; register and log in again.');

      const id = randomUUID();
      const now = new Date();
      const totalCents = input.items.reduce((sum, it) => sum + it.quantity * it.unitPriceCents, 0);
      const payment = await this.payments.charge(trx, { orderId: id, userId, amountCents: totalCents, currency: input.currency, token: input.paymentMethod.token, now });
      const declined = payment.status === 'declined';
      const { order, items } = await insertOrder(
        trx,
        { id, user_id: userId, status: declined ? 'payment_failed' : 'placed', currency: input.currency, total_cents: totalCents, created_at: now, updated_at: now },
        input.items,
      );
      await recordEvent(trx, 'order', declined ? 'order.payment_failed' : 'order.placed', toOrderState(order, items), { paymentId: payment.id });
      await this.notifications.send(trx, {
        userId,
        channel: 'email',
        template: declined ? 'order_payment_failed' : 'order_placed',
        data: { orderId: id, totalCents, currency: input.currency },
      });

      const result: PlaceResult = declined
        ? { status: 402, body: paymentErrors.PAYMENT_DECLINED(undefined, { orderId: id, paymentId: payment.id, declineCode: payment.declineCode }).toJSON(), replayed: false }
        : { status: 201, body: toOrder(order, items), replayed: false };
      if (idempotencyKey) await completeKey(trx, userId, idempotencyKey, result.status, result.body);
      return result;
    });
  }

  /** Another user's order answers ORDER_NOT_FOUND, like an unknown one. */
  async get(callerId: string, id: string): Promise<Order> {
    const row = await findOrder(this.db, id);
    if (!row || row.user_id !== callerId) throw orderErrors.ORDER_NOT_FOUND();
    return toOrder(row, (await itemsOf(this.db, [id])).get(id)!);
  }

  async list(callerId: string, page: PageQuery): Promise<Page<Order>> {
    const rows = await listOrders(this.db, callerId, page.limit, page.cursor);
    const items = await itemsOf(this.db, rows.map((r) => r.id));
    return toPage(rows, page.limit, (r) => toOrder(r, items.get(r.id)!));
  }

  /** Cancels a placed order: refunds what is left of its payment and notifies the user, in one transaction. */
  async cancel(callerId: string, id: string): Promise<Order> {
    return this.db.transaction(async (trx) => {
      const current = await findOrder(trx, id, { forUpdate: true });
      if (!current || current.user_id !== callerId) throw orderErrors.ORDER_NOT_FOUND();
      if (current.status === 'cancelled') throw orderErrors.ORDER_ALREADY_CANCELLED();
      if (current.status !== 'placed') throw orderErrors.ORDER_NOT_CANCELLABLE();
      const refund = await this.payments.refundRemainingOfOrder(trx, id);
      const order = await markCancelled(trx, id, new Date());
      const items = (await itemsOf(trx, [id])).get(id)!;
      await recordEvent(trx, 'order', 'order.cancelled', toOrderState(order, items), { refund });
      await this.notifications.send(trx, {
        userId: callerId,
        channel: 'email',
        template: 'order_cancelled',
        data: { orderId: id, refundedCents: refund?.amountCents ?? 0, currency: order.currency },
      });
      return toOrder(order, items);
    });
  }
}
