import { sleep } from '@strangler/platform';
import type { Channel } from './schemas.ts';

export interface OutgoingNotification {
  /** The provider's idempotency key: delivering the same id twice delivers it once. */
  notificationId: string;
  userId: string;
  channel: Channel;
  template: string;
  data: Record<string, unknown>;
}

/**
 * Delivers notifications on one of the channels. Must be idempotent by `notificationId`, and
 * must honour `signal` (the dispatcher aborts at its deadline and retries later).
 */
export interface NotificationProvider {
  deliver(message: OutgoingNotification, signal: AbortSignal): Promise<{ providerMessageId: string }>;
}

/** A delivery the fake provider made. */
export interface Delivery extends OutgoingNotification {
  providerMessageId: string;
  at: Date;
}

/** The template the fake provider always rejects, to exercise retries and `failed`. */
export const UNDELIVERABLE_TEMPLATE = 'test.undeliverable';

export interface FakeNotificationProviderOptions {
  /** Simulated latency of every call in ms (default 0). */
  latencyMs?: number;
}

/**
 * In-process fake of the email, SMS and push gateways. Deterministic: every template is
 * delivered except `test.undeliverable`, which is always rejected. Idempotent by notification
 * id: a repeated id returns the first receipt and delivers nothing (`calls` still counts it).
 * Keeps at most the last 10,000 deliveries.
 */
export class FakeNotificationProvider implements NotificationProvider {
  readonly deliveries: Record<Channel, Delivery[]> = { email: [], sms: [], push: [] };
  /** Every call, including repeats and rejections: notification id -> number of calls. */
  readonly calls = new Map<string, number>();
  private readonly receipts = new Map<string, string>();

  constructor(private readonly options: FakeNotificationProviderOptions = {}) {}

  async deliver(message: OutgoingNotification, signal: AbortSignal): Promise<{ providerMessageId: string }> {
    this.calls.set(message.notificationId, (this.calls.get(message.notificationId) ?? 0) + 1);
    if (this.calls.size > 100_000) this.calls.delete(this.calls.keys().next().value!);
    if (this.options.latencyMs) await sleep(this.options.latencyMs, signal);
    if (signal.aborted) throw new Error('delivery aborted');
    const known = this.receipts.get(message.notificationId);
    if (known) return { providerMessageId: known };
    if (message.template === UNDELIVERABLE_TEMPLATE) throw new Error(`${message.channel} gateway rejected template ${message.template}`);
    const providerMessageId = `${message.channel}_${message.notificationId.replaceAll('-', '')}`;
    this.receipts.set(message.notificationId, providerMessageId);
    if (this.receipts.size > 100_000) this.receipts.delete(this.receipts.keys().next().value!);
    const list = this.deliveries[message.channel];
    list.push({ ...message, providerMessageId, at: new Date() });
    if (list.length > 10_000) list.shift();
    return { providerMessageId };
  }

  /** All deliveries of every channel. */
  allDeliveries(): Delivery[] {
    return [...this.deliveries.email, ...this.deliveries.sms, ...this.deliveries.push];
  }
}
