import type { Knex } from 'knex';
import { appendEvent } from '@strangler/outbox';
import type { NotificationState } from '../notifications/resource.ts';

/** Origin of every event this service writes; its consumer ignores events of this origin (its own echoes). */
export const ORIGIN = 'notification';

export type NotificationEventType = 'notification.queued' | 'notification.sent' | 'notification.failed';

/**
 * Appends the event of one version bump of a notification in the caller's transaction, with the
 * monolith's payload shape (full state incl. providerMessageId and version, plus `extra`, e.g.
 * `attempts`), so the monolith's sync consumer applies it like one of its own.
 */
export async function recordNotificationEvent(trx: Knex.Transaction, eventType: NotificationEventType, state: NotificationState, extra: Record<string, unknown> = {}): Promise<void> {
  await appendEvent(trx, {
    aggregateType: 'notification',
    aggregateId: state.id,
    aggregateVersion: state.version,
    eventType,
    payload: { ...state, ...extra },
    origin: ORIGIN,
  });
}
