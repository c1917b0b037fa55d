import { z } from 'zod';
import type { EventHandler, ReceivedEvent } from '@strangler/outbox';
import { applyNotificationState, notificationVersion } from '../db/notifications.ts';
import { applyUserState, userVersion } from '../db/users.ts';
import { CHANNELS, STATUSES } from '../notifications/schemas.ts';

const iso = z.iso.datetime({ offset: true });

/** `user.*` payloads: the user's full state (the monolith also sends passwordHash, which is not kept). */
const userPayload = z.object({ id: z.uuid(), email: z.string(), name: z.string(), version: z.number().int().min(1), createdAt: iso, updatedAt: iso });

/** `notification.*` payloads: the notification's full state (extra fields such as `attempts` are ignored). */
const notificationPayload = z.object({
  id: z.uuid(),
  userId: z.uuid(),
  channel: z.enum(CHANNELS),
  template: z.string(),
  data: z.record(z.string(), z.unknown()),
  status: z.enum(STATUSES),
  failureReason: z.string().nullable(),
  providerMessageId: z.string().nullable(),
  version: z.number().int().min(1),
  createdAt: iso,
  updatedAt: iso,
  sentAt: iso.nullable(),
});

/** A payload this consumer cannot apply; the consumer retries it, then parks it for an engineer. */
export class EventPayloadError extends Error {
  readonly code = 'EVENT_PAYLOAD_INVALID';
}

function parse<S extends z.ZodType>(schema: S, event: ReceivedEvent): z.infer<S> {
  const result = schema.safeParse(event.payload);
  if (!result.success) throw new EventPayloadError(`${event.type} ${event.aggregateId}: ${result.error.issues.map((i) => `${i.path.join('.') || '(payload)'}: ${i.message}`).join('; ')}`);
  const state = result.data as { id: string; version: number };
  if (state.id !== event.aggregateId || state.version !== event.aggregateVersion) {
    throw new EventPayloadError(`${event.type}: payload is ${state.id} v${state.version}, envelope says ${event.aggregateId} v${event.aggregateVersion}`);
  }
  return result.data;
}

/**
 * Applies other sides' events to this database: `user.*` to the users projection and
 * `notification.*` (notifications the monolith is the writer of record for) to `notifications`.
 * Every event carries the entity's full state, so applying is an upsert of it; the consumer's
 * version rule (versionOf = the row's `version`) admits only the next version. Applying never
 * appends an outbox event and never creates a dispatch row: the writer of record delivers.
 */
export const notificationEventHandler: EventHandler = {
  async versionOf(trx, event) {
    switch (event.aggregateType) {
      case 'user':
        return userVersion(trx, event.aggregateId);
      case 'notification':
        return notificationVersion(trx, event.aggregateId);
      default:
        throw new EventPayloadError(`unexpected aggregate ${event.aggregateType} (${event.type}): this consumer binds user.* and notification.* only`);
    }
  },
  async apply(trx, event) {
    if (event.aggregateType === 'user') await applyUserState(trx, parse(userPayload, event));
    else await applyNotificationState(trx, parse(notificationPayload, event));
  },
};
