import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { currentContext } from '@strangler/platform';
import { enqueueRequest } from './forward-queue.ts';
import type { NotificationPort, NotificationRequest } from './port.ts';

/**
 * NotificationPort of NOTIFICATION_TRANSPORT=grpc: the extracted notification service is the
 * writer of record. `send` cannot call the service inside the caller's transaction (a rolled-back
 * order would leave a sent notification; a down service would fail the order), so it picks the
 * notification id, queues the request in `notification_requests` in the caller's transaction and
 * returns the id at once. The NotificationForwarder makes the call after commit; the monolith's
 * own `notifications` row arrives later through the sync consumer (src/sync/).
 */
export class GrpcNotificationPort implements NotificationPort {
  /** @param onQueued called after the caller's transaction committed, to wake the forwarder early. */
  constructor(private readonly onQueued: () => void = () => {}) {}

  async send(trx: Knex.Transaction, request: NotificationRequest): Promise<{ id: string }> {
    const id = randomUUID();
    const ctx = currentContext();
    await enqueueRequest(trx, {
      id,
      user_id: request.userId,
      channel: request.channel,
      template: request.template,
      data: request.data,
      request_id: ctx?.requestId ?? null,
      traceparent: ctx?.traceparent ?? null,
      created_at: new Date(),
    });
    // A wake-up hint only (the forwarder polls anyway); a rollback simply never wakes it.
    trx.executionPromise?.then(this.onQueued, () => {});
    return { id };
  }
}
