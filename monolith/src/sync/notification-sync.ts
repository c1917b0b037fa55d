import { z } from 'zod';
import { CHANNELS } from '../notifications/schemas.ts';
import type { SyncedEntity } from './apply-state.ts';

// Optional text: absent, null and '' (proto3's "unset") all mean null.
const optionalText = z.string().nullish().transform((v) => v || null);
const timestamp = z.iso.datetime({ offset: true });
const optionalTimestamp = z.union([timestamp, z.literal(''), z.null()]).optional().transform((v) => v || null);

/**
 * A notification's full state as the notification service's events carry it: the HTTP resource
 * plus `providerMessageId` (and `version`, `attempts`, which are not copied: the version is the
 * event's). Unknown fields are ignored, so the service can add some without breaking the sync.
 */
const notificationPayload = z.object({
  id: z.uuid(),
  userId: z.uuid(),
  channel: z.enum(CHANNELS),
  template: z.string().min(1),
  data: z.record(z.string(), z.unknown()),
  status: z.enum(['queued', 'sent', 'failed']),
  failureReason: optionalText,
  providerMessageId: optionalText,
  createdAt: timestamp,
  updatedAt: timestamp,
  sentAt: optionalTimestamp,
});

/**
 * Notifications written by the extracted notification service (origin `notification`), applied
 * to the monolith's `notifications` table. Applying never creates a `notification_dispatch` row:
 * only the writer of record delivers.
 */
export const notificationSync: SyncedEntity = {
  aggregateType: 'notification',
  origin: 'notification',
  table: 'notifications',
  toRow(payload, event) {
    const parsed = notificationPayload.safeParse(payload);
    if (!parsed.success) {
      throw new Error(`${event.type} ${event.aggregateId}: payload is not a notification: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(payload)'} ${i.message}`).join('; ')}`);
    }
    const p = parsed.data;
    return {
      id: p.id,
      user_id: p.userId,
      channel: p.channel,
      template: p.template,
      data: JSON.stringify(p.data),
      status: p.status,
      failure_reason: p.failureReason,
      provider_message_id: p.providerMessageId,
      created_at: p.createdAt,
      updated_at: p.updatedAt,
      sent_at: p.sentAt,
    };
  },
};
