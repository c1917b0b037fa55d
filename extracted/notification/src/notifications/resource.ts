import type { Channel, NotificationStatus } from './schemas.ts';

/** A row of `notifications` (the same columns as the monolith's table). */
export interface NotificationRow {
  id: string;
  user_id: string;
  channel: Channel;
  template: string;
  data: Record<string, unknown>;
  status: NotificationStatus;
  failure_reason: string | null;
  provider_message_id: string | null;
  version: number;
  created_at: Date;
  updated_at: Date;
  sent_at: Date | null;
}

/** The notification resource of the HTTP API: the monolith's, field for field. */
export interface Notification {
  id: string;
  userId: string;
  channel: Channel;
  template: string;
  /** As stored in jsonb (keys in jsonb order). */
  data: Record<string, unknown>;
  status: NotificationStatus;
  /** Why delivery gave up; null unless status is `failed`. */
  failureReason: string | null;
  createdAt: string;
  updatedAt: string;
  /** When the provider accepted it; null unless status is `sent`. */
  sentAt: string | null;
}

/** Full stored state, as carried by notification events (both directions). */
export interface NotificationState extends Notification {
  providerMessageId: string | null;
  version: number;
}

export const toNotification = (r: NotificationRow): Notification => ({
  id: r.id,
  userId: r.user_id,
  channel: r.channel,
  template: r.template,
  data: r.data,
  status: r.status,
  failureReason: r.failure_reason,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
  sentAt: r.sent_at ? r.sent_at.toISOString() : null,
});

export const toNotificationState = (r: NotificationRow): NotificationState => ({ ...toNotification(r), providerMessageId: r.provider_message_id, version: r.version });
