import { z } from 'zod';

export const MAX_ITEMS = 100;

export const orderItemSchema = z.strictObject({
  sku: z.string().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'Use letters, digits, ".", "_" or "-", starting with a letter or digit.'),
  quantity: z.number().int().min(1).max(1_000),
  unitPriceCents: z.number().int().min(1).max(100_000_000),
});

export const placeOrderSchema = z.strictObject({
  items: z.array(orderItemSchema).min(1).max(MAX_ITEMS),
  currency: z.string().regex(/^[A-Z]{3}$/, 'Use an ISO 4217 code in upper case, e.g. EUR.'),
  paymentMethod: z.strictObject({ token: z.string().min(1).max(100) }),
});
export type PlaceOrderInput = z.infer<typeof placeOrderSchema>;

/** Headers of POST /api/orders. */
export const placeOrderHeadersSchema = z.object({
  'idempotency-key': z
    .string()
    .min(1)
    .max(255)
    .regex(/^[\x21-\x7e]+$/, 'Use 1-255 visible ASCII characters, e.g. a uuid.')
    .optional(),
});

/** POST /api/orders/:id/cancel takes no input: no body, or `{}`. */
export const cancelOrderSchema = z.strictObject({}).optional();
