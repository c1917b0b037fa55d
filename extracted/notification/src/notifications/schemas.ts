import { z } from 'zod';

export const CHANNELS = ['email', 'sms', 'push'] as const;
export type Channel = (typeof CHANNELS)[number];
export const STATUSES = ['queued', 'sent', 'failed'] as const;
export type NotificationStatus = (typeof STATUSES)[number];

/** Largest `data` accepted, as serialised JSON. */
export const MAX_DATA_BYTES = 8 * 1024;

const template = z.string().regex(/^[a-z][a-z0-9_.-]{0,99}$/, 'Use 1-100 lower-case letters, digits, ".", "_" or "-", starting with a letter.');
const data = z
  .record(z.string(), z.unknown())
  .refine((d) => Buffer.byteLength(JSON.stringify(d)) <= MAX_DATA_BYTES, `Must be at most ${MAX_DATA_BYTES} bytes as JSON.`);

/** `POST /api/notifications`: the monolith's rules and messages, word for word (they are the contract). */
export const createNotificationSchema = z.strictObject({
  userId: z.uuid(),
  channel: z.enum(CHANNELS),
  template,
  data,
});
export type CreateNotificationInput = z.infer<typeof createNotificationSchema>;

/** gRPC `Send`: the same rules plus the caller-chosen `id` (the idempotency key). */
export const sendNotificationSchema = createNotificationSchema.extend({ id: z.uuid() });
export type SendNotificationInput = z.infer<typeof sendNotificationSchema>;
