import type { Knex } from 'knex';
import { Counter } from 'prom-client';
import { backoffDelay, sleep, withTimeout, type Logger, type Registry } from '@strangler/platform';
import { claimDue, finish, scheduleRetry, type ClaimedNotification } from '../db/dispatch.ts';
import { recordNotificationEvent } from '../events/publish.ts';
import { toNotificationState } from '../notifications/resource.ts';
import type { NotificationProvider } from './provider.ts';

export interface DispatcherOptions {
  /** Deliveries claimed per transaction (default 20). */
  batchSize?: number;
  /** Pause between polls when there was nothing (or less than a batch) to do, in ms (default 500). */
  pollIntervalMs?: number;
  /** Attempts before a notification is marked `failed` (default 5). */
  maxAttempts?: number;
  /** Delay before retry n (1-based) is retryBaseMs * 2^(n-1), capped at retryMaxMs (defaults 1 s, 60 s). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Deadline of one provider call in ms (default 5 s); a timed-out call counts as a failed attempt. */
  sendTimeoutMs?: number;
  /**
   * How long an email waits for its user to reach the users projection (default 1 h). The
   * user's address comes from the monolith's events; a user registered a moment before the
   * notification may not be there yet. Waiting uses no attempts; past this it fails.
   */
  userWaitMs?: number;
}

/** An email waiting for its user is looked at again after at least this long. */
const USER_POLL_MIN_MS = 100;

export interface DispatchStats {
  sent: number;
  retried: number;
  failed: number;
}

/**
 * Delivers the notifications this service is the writer of record for (those with a
 * `notification_dispatch` row) and moves them to `sent` or `failed`. The monolith's dispatcher,
 * over this service's tables and events.
 *
 * Invariants: a notification is delivered at most once. Each batch is claimed with
 * `FOR UPDATE SKIP LOCKED` on its dispatch rows and held until the batch commits, so two
 * dispatchers (in one process or many) never work on the same row; a finished row's dispatch
 * row is deleted in the same transaction as the status change (version + 1) and its one event.
 * If the process dies after the provider accepted a message but before commit, the row is
 * claimed again and the provider call repeats with the same idempotency key (the notification
 * id), which the provider deduplicates. Notifications applied from another side's events have no
 * dispatch row and are never delivered here.
 *
 * Retries: with the defaults, attempts 2..5 wait 1, 2, 4 and 8 s; the 5th failure marks the
 * notification `failed`. Retries touch only the dispatch row: no version bump, no event.
 * An email whose user is not in the users projection yet is not sent without an address: it
 * waits (without using attempts; polled every retryBaseMs, 100 ms at least, then every quarter of the time waited
 * so far later, at most retryMaxMs), and fails after `userWaitMs`.
 * A database error aborts the batch (nothing is recorded; the claimed rows become due again)
 * and the loop backs off with jitter, up to 10 s.
 */
export class NotificationDispatcher {
  private readonly opts: Required<DispatcherOptions>;
  private readonly outcomes: Counter<'channel' | 'outcome'>;
  private loop: Promise<void> | undefined;
  private stopping: AbortController | undefined;

  constructor(
    private readonly db: Knex,
    private readonly provider: NotificationProvider,
    private readonly logger: Logger,
    registry: Registry,
    options: DispatcherOptions = {},
  ) {
    this.opts = {
      batchSize: options.batchSize ?? 20,
      pollIntervalMs: options.pollIntervalMs ?? 500,
      maxAttempts: options.maxAttempts ?? 5,
      retryBaseMs: options.retryBaseMs ?? 1_000,
      userWaitMs: options.userWaitMs ?? 3_600_000,
      retryMaxMs: options.retryMaxMs ?? 60_000,
      sendTimeoutMs: options.sendTimeoutMs ?? 5_000,
    };
    this.outcomes =
      (registry.getSingleMetric('notifications_dispatched_total') as Counter<'channel' | 'outcome'> | undefined) ??
      new Counter({ name: 'notifications_dispatched_total', help: 'Notification delivery attempts by outcome (sent, retry, failed, waiting-for-user)', labelNames: ['channel', 'outcome'], registers: [registry] });
  }

  /** Claims one batch of due notifications and delivers it in one transaction. */
  async runOnce(): Promise<DispatchStats> {
    const stats: DispatchStats = { sent: 0, retried: 0, failed: 0 };
    await this.db.transaction(async (trx) => {
      for (const claimed of await claimDue(trx, this.opts.batchSize, new Date())) {
        // Stopping: leave the rest of the batch untouched; it is due again after commit.
        if (this.stopping?.signal.aborted) break;
        stats[await this.deliver(trx, claimed)]++;
      }
    });
    return stats;
  }

  /** Runs batches until one finds nothing due (for tests and one-off drains). */
  async drain(): Promise<DispatchStats> {
    const total: DispatchStats = { sent: 0, retried: 0, failed: 0 };
    for (;;) {
      const s = await this.runOnce();
      total.sent += s.sent;
      total.retried += s.retried;
      total.failed += s.failed;
      if (s.sent + s.retried + s.failed === 0) return total;
    }
  }

  /** Starts the background loop (idempotent). */
  start(): void {
    if (this.loop) return;
    const stopping = (this.stopping = new AbortController());
    this.loop = (async () => {
      let errors = 0;
      while (!stopping.signal.aborted) {
        try {
          const s = await this.runOnce();
          errors = 0;
          if (s.sent + s.retried + s.failed < this.opts.batchSize) await sleep(this.opts.pollIntervalMs, stopping.signal);
        } catch (err) {
          this.logger.error({ err }, 'notification dispatch batch failed');
          await sleep(backoffDelay(errors++, { baseMs: 200, maxMs: 10_000 }), stopping.signal);
        }
      }
    })();
  }

  /**
   * Stops the loop: the delivery in progress finishes (bounded by sendTimeoutMs), the rest of
   * the batch is left for later, and the batch commits.
   */
  async stop(): Promise<void> {
    this.stopping?.abort();
    await this.loop;
    this.loop = undefined;
  }

  private async deliver(trx: Knex.Transaction, n: ClaimedNotification): Promise<'sent' | 'retried' | 'failed'> {
    if (n.channel === 'email' && n.recipient_email === null) return this.awaitUser(trx, n);
    const attempts = n.attempts + 1;
    const outcome = await this.callProvider(n);
    if ('providerMessageId' in outcome) {
      const row = await finish(trx, n.id, { status: 'sent', providerMessageId: outcome.providerMessageId }, new Date());
      await recordNotificationEvent(trx, 'notification.sent', toNotificationState(row), { attempts });
      this.outcomes.inc({ channel: n.channel, outcome: 'sent' });
      return 'sent';
    }
    if (attempts >= this.opts.maxAttempts) {
      const row = await finish(trx, n.id, { status: 'failed', reason: `Gave up after ${attempts} attempts: ${outcome.error}` }, new Date());
      await recordNotificationEvent(trx, 'notification.failed', toNotificationState(row), { attempts });
      this.outcomes.inc({ channel: n.channel, outcome: 'failed' });
      this.logger.warn({ notificationId: n.id, attempts, error: outcome.error }, 'notification failed');
      return 'failed';
    }
    const delay = Math.min(this.opts.retryMaxMs, this.opts.retryBaseMs * 2 ** (attempts - 1));
    await scheduleRetry(trx, n.id, attempts, new Date(Date.now() + delay), outcome.error);
    this.outcomes.inc({ channel: n.channel, outcome: 'retry' });
    return 'retried';
  }

  /** An email for a user not synchronised yet: checked again later, or failed once waited too long. */
  private async awaitUser(trx: Knex.Transaction, n: ClaimedNotification): Promise<'retried' | 'failed'> {
    const now = Date.now();
    const waited = now - n.created_at.getTime();
    if (waited >= this.opts.userWaitMs) {
      const reason = `No email address: user ${n.user_id} did not reach this service's users projection within ${Math.round(this.opts.userWaitMs / 1000)} s; check that the monolith's relay runs and that this service's consumer is bound to user.* events.`;
      const row = await finish(trx, n.id, { status: 'failed', reason }, new Date(now));
      await recordNotificationEvent(trx, 'notification.failed', toNotificationState(row), { attempts: n.attempts });
      this.outcomes.inc({ channel: n.channel, outcome: 'failed' });
      this.logger.warn({ notificationId: n.id, userId: n.user_id }, 'notification failed: user never synchronised');
      return 'failed';
    }
    const delay = Math.min(Math.max(this.opts.retryMaxMs, USER_POLL_MIN_MS), Math.max(this.opts.retryBaseMs, USER_POLL_MIN_MS, waited / 4));
    await scheduleRetry(trx, n.id, n.attempts, new Date(now + delay), `waiting for user ${n.user_id} to be synchronised (no email address yet)`);
    this.outcomes.inc({ channel: n.channel, outcome: 'waiting-for-user' });
    return 'retried';
  }

  private async callProvider(n: ClaimedNotification): Promise<{ providerMessageId: string } | { error: string }> {
    const controller = new AbortController();
    try {
      return await withTimeout(
        this.provider.deliver(
          {
            notificationId: n.id,
            userId: n.user_id,
            channel: n.channel,
            template: n.template,
            data: n.data,
            recipient: n.recipient_email === null ? null : { email: n.recipient_email, name: n.recipient_name ?? '' },
          },
          controller.signal,
        ),
        this.opts.sendTimeoutMs,
        `provider did not answer within ${this.opts.sendTimeoutMs} ms`,
      );
    } catch (err) {
      controller.abort();
      return { error: err instanceof Error ? err.message : String(err) };
    }
  }
}
