import { randomUUID } from 'node:crypto';
import { afterAll } from 'vitest';
import type { TestBroker } from '@strangler/platform/testing';

/** Polls `check` every 25 ms until it is truthy; fails after `timeoutMs` saying `what`. */
export async function waitFor(what: string, check: () => Promise<unknown> | unknown, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A notification's full state at `version`, as the notification service's events carry it. */
export function notificationStateAt(notificationId: string, version: number, userId: string) {
  const created = '2025-01-02T03:04:05.678Z';
  const sent = version >= 2;
  return {
    id: notificationId,
    userId,
    channel: 'email',
    template: 'order_placed',
    data: { orderId: 'o-1', totalCents: 2500 },
    status: sent ? 'sent' : 'queued',
    failureReason: null as string | null,
    providerMessageId: sent ? `email_${notificationId.replaceAll('-', '')}` : null,
    createdAt: created,
    updatedAt: new Date(Date.parse(created) + version * 1_000).toISOString(),
    sentAt: sent ? new Date(Date.parse(created) + 2_000).toISOString() : null,
    version,
  };
}

export interface NotificationEvent {
  /** Message id (outbox id); new by default. Reuse one to redeliver. */
  id?: string;
  notificationId: string;
  version: number;
  type?: string;
  /** Default `notification`. */
  origin?: string;
  /** Default notificationStateAt(notificationId, version, userOf(notificationId)). */
  state?: Record<string, unknown>;
}

/**
 * Publishes notification events to the test exchange exactly as the relay does (the envelope as
 * body, messageId, type, persistent, mandatory, the x- headers), on a confirm channel.
 */
export async function notificationPublisher(broker: TestBroker) {
  const conn = await broker.connect('publisher');
  afterAll(() => conn.close());
  const ch = await conn.createConfirmChannel();
  await ch.assertExchange(broker.exchange, 'topic', { durable: true });
  const users = new Map<string, string>();
  const userOf = (notificationId: string) => {
    if (!users.has(notificationId)) users.set(notificationId, randomUUID());
    return users.get(notificationId)!;
  };
  async function publish(e: NotificationEvent): Promise<string> {
    const id = e.id ?? randomUUID();
    const origin = e.origin ?? 'notification';
    const type = e.type ?? (e.version === 1 ? 'notification.queued' : 'notification.sent');
    const payload = e.state ?? notificationStateAt(e.notificationId, e.version, userOf(e.notificationId));
    const body = { id, type, aggregateType: 'notification', aggregateId: e.notificationId, aggregateVersion: e.version, origin, occurredAt: new Date().toISOString(), schemaVersion: 1, headers: {}, payload };
    await new Promise<void>((resolve, reject) =>
      ch.publish(
        broker.exchange,
        type,
        Buffer.from(JSON.stringify(body)),
        {
          persistent: true,
          mandatory: true,
          messageId: id,
          type,
          contentType: 'application/json',
          appId: origin,
          headers: { 'x-aggregate-type': 'notification', 'x-aggregate-id': e.notificationId, 'x-aggregate-version': e.version, 'x-origin': origin, 'x-schema-version': 1 },
        },
        (err) => (err ? reject(err) : resolve()),
      ),
    );
    return id;
  }
  return { publish, userOf };
}
