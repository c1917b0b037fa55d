import { z } from 'zod';

export const CHANNELS = ['email', 'sms', 'push'] as const;
export type Channel = (typeof CHANNELS)[number];

/** Largest `data` accepted, as serialised JSON. */
export const MAX_DATA_BYTES = 8 * 1024;

export const createNotificationSchema = z.strictObject({
  userId: z.uuid(),
  channel: z.enum(CHANNELS),
  template: z.string().regex(/^[a-z][a-z0-9_.-]{0,99}$/, 'Use 1-100 lower-case letters, digits, ".", "_" or "-", starting with a letter.'),
  data: z
    .record(z.string(), z.unknown())
    .refine((d) => Buffer.byteLength(JSON.stringify(d)) <= MAX_DATA_BYTES, `Must be at most ${MAX_DATA_BYTES} bytes as JSON.`),
});
export type CreateNotificationInput = z.infer<typeof createNotificationSchema>;
