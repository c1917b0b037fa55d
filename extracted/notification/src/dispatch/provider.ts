import type { Knex } from 'knex';
import { sleep } from '@strangler/platform';
import type { Channel } from '../notifications/schemas.ts';

export interface OutgoingNotification {
  /** The provider's idempotency key: delivering the same id twice delivers it once. */
  notificationId: string;
  userId: string;
  channel: Channel;
  template: string;
  data: Record<string, unknown>;
  /** From the users projection; null while the user has not been synchronised yet. */
  recipient: { email: string; name: string } | null;
}

/**
 * Delivers notifications on one of the channels. Must be idempotent by `notificationId`, and
 * must honour `signal` (the dispatcher aborts at its deadline and retries later).
 */
export interface NotificationProvider {
  deliver(message: OutgoingNotification, signal: AbortSignal): Promise<{ providerMessageId: string }>;
}

/** The template the fake provider always rejects, to exercise retries and `failed` (as the monolith's). */
export const UNDELIVERABLE_TEMPLATE = 'test.undeliverable';

/** A row of the fake provider's log (`provider_deliveries`). */
export interface ProviderLogEntry {
  seq: number;
  notification_id: string;
  outcome: 'delivered' | 'duplicate' | 'rejected';
  channel: Channel;
  template: string;
  user_id: string;
  recipient: string | null;
  provider_message_id: string | null;
  error: string | null;
  at: Date;
}

export interface FakeNotificationProviderOptions {
  /** Simulated latency of every call in ms (default 0). */
  latencyMs?: number;
}

/**
 * In-process fake of the email, SMS and push gateways, with the monolith's deterministic
 * outcomes: every template is delivered except `test.undeliverable`, always rejected; the
 * receipt is `<channel>_<notification id without dashes>`.
 *
 * It RECORDS every call in `provider_deliveries` (see migrations/notification/005), on its own
 * pool connection and so outside the dispatcher's transaction, like a real gateway's log: a
 * dispatcher that crashed after the send still leaves the send on record. Idempotent by
 * notification id: the unique index on delivered rows admits one delivery; a repeated call is
 * logged as `duplicate` and answered with the first receipt.
 */
export class FakeNotificationProvider implements NotificationProvider {
  constructor(
    private readonly log: Knex,
    private readonly options: FakeNotificationProviderOptions = {},
  ) {}

  async deliver(message: OutgoingNotification, signal: AbortSignal): Promise<{ providerMessageId: string }> {
    if (this.options.latencyMs) await sleep(this.options.latencyMs, signal);
    if (signal.aborted) throw new Error('delivery aborted');
    const entry = {
      notification_id: message.notificationId,
      channel: message.channel,
      template: message.template,
      user_id: message.userId,
      recipient: message.channel === 'email' ? (message.recipient?.email ?? null) : null,
    };
    if (message.template === UNDELIVERABLE_TEMPLATE) {
      const error = `${message.channel} gateway rejected template ${message.template}`;
      await this.log('provider_deliveries').insert({ ...entry, outcome: 'rejected', error });
      throw new Error(error);
    }
    const providerMessageId = `${message.channel}_${message.notificationId.replaceAll('-', '')}`;
    const { rows } = await this.log.raw<{ rows: unknown[] }>(
      `insert into provider_deliveries (notification_id, channel, template, user_id, recipient, outcome, provider_message_id)
       values (?, ?, ?, ?, ?, 'delivered', ?)
       on conflict (notification_id) where outcome = 'delivered' do nothing
       returning seq`,
      [entry.notification_id, entry.channel, entry.template, entry.user_id, entry.recipient, providerMessageId],
    );
    if (rows.length) return { providerMessageId };
    const first = await this.log('provider_deliveries').where({ notification_id: message.notificationId, outcome: 'delivered' }).first<{ provider_message_id: string }>('provider_message_id');
    await this.log('provider_deliveries').insert({ ...entry, outcome: 'duplicate', provider_message_id: first.provider_message_id });
    return { providerMessageId: first.provider_message_id };
  }

  /** The log, oldest first; only the given notifications' calls when `ids` is given. */
  async calls(ids?: string[]): Promise<ProviderLogEntry[]> {
    const q = this.log<ProviderLogEntry>('provider_deliveries').orderBy('seq');
    if (ids) q.whereIn('notification_id', ids);
    return q;
  }
}
