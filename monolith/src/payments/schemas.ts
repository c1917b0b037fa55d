import { z } from 'zod';

export const refundSchema = z.strictObject({
  /** Omitted: refund everything not refunded yet. */
  amountCents: z.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
});

export const paymentListQuerySchema = z.object({ orderId: z.uuid() });
