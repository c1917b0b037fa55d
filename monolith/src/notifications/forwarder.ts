import type { Knex } from 'knex';
import { Counter, Gauge } from 'prom-client';
import { backoffDelay, isAppError, newRequestId, runWithContext, sleep, type Logger, type Registry, type ResilientGrpcClient } from '@strangler/platform';
import { registerBreakerMetrics } from '../shared/breaker-metrics.ts';
import { claimDueRequests, deleteRequest, forwardQueueStats, markRequestFailed, recordAttempt, type ForwardRequestRow } from './forward-queue.ts';
import type { NotificationReply, SendRequest } from './grpc-client.ts';

export interface ForwarderOptions {
  /** Requests claimed per transaction; their Sends run concurrently (default 20). */
  batchSize?: number;
  /** Pause between polls when there was less than a batch to do, in ms (default 500). Commits of this process wake it earlier. */
  pollIntervalMs?: number;
  /**
   * After a failure that may be the request's own (deadline exceeded, a 5xx other than
   * unavailable), the request waits retryBaseMs * 2^(n-1), capped at retryMaxMs, before its next
   * try (defaults 1 s and 30 s), so one bad request does not slow every batch.
   */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Pause of the whole loop while the service is unreachable and the breaker still closed: full jitter up to base * 2^n, capped (defaults 200 ms, 5 s). */
  outageBaseMs?: number;
  outageMaxMs?: number;
}

export interface ForwardStats {
  /** Rows claimed by the batch. */
  claimed: number;
  /** Sent and answered: the row is gone. */
  forwarded: number;
  /** Refused by the service (4xx): the row is `failed`. */
  rejected: number;
  /** Tried and failed in transit or with a 5xx: the row stays pending. */
  retrying: number;
  /** Not tried: the breaker was open. */
  skipped: number;
}

type Outcome = 'forwarded' | 'rejected' | 'retrying' | 'skipped';
type Failure = 'rejected' | 'circuit_open' | 'unavailable' | 'error';

const emptyStats = (): ForwardStats => ({ claimed: 0, forwarded: 0, rejected: 0, retrying: 0, skipped: 0 });

/**
 * Forwards the requests GrpcNotificationPort queued in `notification_requests` to the
 * notification service's `Send`, through ONE ResilientGrpcClient (deadline per attempt, retries
 * of transport failures with jittered backoff, one breaker).
 *
 * Invariants: a request is deleted only in the transaction that saw its Send answered, so none is
 * lost (a crash, a lost reply or a failed commit leaves the row, and it is sent again); none is
 * sent twice, because every try carries the same id and Send is idempotent on it. Rows are
 * claimed `FOR UPDATE SKIP LOCKED` and held until the batch commits, so several forwarders (one
 * per monolith process) never send the same row at once; a dead process's locks go with its
 * connection.
 *
 * Failure modes: the service refusing a request (4xx) marks it `failed` with the error (counted,
 * logged, never retried on its own); an unreachable service leaves every row pending and backs
 * the loop off (200 ms .. 5 s while the breaker is still closed; once it is open the loop sleeps
 * until the breaker's half-open trial instead of trying each row); deadlines and other 5xx defer
 * only the row concerned (1, 2, 4 ... 30 s). A database error aborts the batch (nothing recorded,
 * the rows become due again) and the loop backs off up to 10 s.
 */
export class NotificationForwarder {
  private readonly opts: Required<ForwarderOptions>;
  private readonly forwardedTotal: Counter;
  private readonly failures: Counter<'reason'>;
  private loop: Promise<void> | undefined;
  private stopping: AbortController | undefined;
  private pendingWake: 'queued' | 'breaker' | null = null;
  private wakeUp: ((kind: 'queued' | 'breaker') => void) | null = null;
  private outage = false;

  constructor(
    private readonly db: Knex,
    readonly client: ResilientGrpcClient,
    private readonly logger: Logger,
    registry: Registry,
    options: ForwarderOptions = {},
  ) {
    this.opts = {
      batchSize: options.batchSize ?? 20,
      pollIntervalMs: options.pollIntervalMs ?? 500,
      retryBaseMs: options.retryBaseMs ?? 1_000,
      retryMaxMs: options.retryMaxMs ?? 30_000,
      outageBaseMs: options.outageBaseMs ?? 200,
      outageMaxMs: options.outageMaxMs ?? 5_000,
    };
    for (const name of ['notification_forwarded_total', 'notification_forward_failures_total', 'notification_forward_queue_depth', 'notification_forward_queue_oldest_seconds']) {
      registry.removeSingleMetric(name);
    }
    this.forwardedTotal = new Counter({ name: 'notification_forwarded_total', help: 'Notification requests the service accepted (Send answered)', registers: [registry] });
    this.failures = new Counter({
      name: 'notification_forward_failures_total',
      help: 'Failed forwarding tries by reason: rejected (4xx, request marked failed), unavailable, error (deadline, 5xx), circuit_open (not tried)',
      labelNames: ['reason'],
      registers: [registry],
    });
    const stats = () => forwardQueueStats(this.db);
    new Gauge({
      name: 'notification_forward_queue_depth',
      help: 'Requests in notification_requests by status (pending: waiting to be forwarded; failed: refused by the service)',
      labelNames: ['status'],
      registers: [registry],
      async collect() {
        try {
          const s = await stats();
          this.set({ status: 'pending' }, s.pending);
          this.set({ status: 'failed' }, s.failed);
        } catch {
          // database unreachable: keep the last values
        }
      },
    });
    new Gauge({
      name: 'notification_forward_queue_oldest_seconds',
      help: 'Age of the oldest pending notification request',
      registers: [registry],
      async collect() {
        try {
          this.set((await stats()).oldestPendingSeconds);
        } catch {
          // database unreachable: keep the last value
        }
      },
    });
    registerBreakerMetrics(registry, client);
    client.breaker.on('open', () => this.logger.warn({ upstream: client.name }, 'breaker open: notification requests stay queued'));
    client.breaker.on('halfOpen', () => {
      this.logger.info({ upstream: client.name }, 'breaker half-open: trying one request');
      this.wake(true);
    });
    client.breaker.on('close', () => this.logger.info({ upstream: client.name }, 'breaker closed'));
  }

  /** Claims one batch of due requests and forwards it; the batch commits as one transaction. */
  async runOnce(): Promise<ForwardStats> {
    const stats = emptyStats();
    await this.db.transaction(async (trx) => {
      const rows = await claimDueRequests(trx, this.opts.batchSize);
      stats.claimed = rows.length;
      // The Sends run concurrently; their outcomes are written one after the other (one connection).
      const results = await Promise.all(rows.map((row) => this.send(row)));
      for (const [i, row] of rows.entries()) stats[await this.record(trx, row, results[i]!)]++;
    });
    return stats;
  }

  /** Runs batches until one forwards and rejects nothing (for tests and one-off drains). */
  async drain(): Promise<ForwardStats> {
    const total = emptyStats();
    for (;;) {
      const s = await this.runOnce();
      for (const k of Object.keys(total) as Array<keyof ForwardStats>) total[k] += s[k];
      if (s.forwarded + s.rejected === 0) return total;
    }
  }

  /** Starts the background loop (idempotent). */
  start(): void {
    if (this.loop) return;
    const stopping = (this.stopping = new AbortController());
    this.loop = (async () => {
      let dbErrors = 0;
      let outages = 0;
      while (!stopping.signal.aborted) {
        let s: ForwardStats;
        try {
          s = await this.runOnce();
          dbErrors = 0;
        } catch (err) {
          this.logger.error({ err }, 'notification forwarding batch failed');
          await this.pause(backoffDelay(dbErrors++, { baseMs: 200, maxMs: 10_000 }), false);
          continue;
        }
        if (s.forwarded === 0 && s.retrying + s.skipped > 0) {
          if (!this.outage) this.logger.warn({ pending: s.claimed }, 'notification service unreachable: requests stay queued');
          this.outage = true;
          // Open breaker: nothing passes before its half-open trial, which wakes the loop; the
          // outage cap only bounds the wait (a claim that finds the breaker still open is cheap).
          const delay = this.client.breaker.opened ? this.opts.outageMaxMs : backoffDelay(outages++, { baseMs: this.opts.outageBaseMs, maxMs: this.opts.outageMaxMs });
          await this.pause(delay, false);
          continue;
        }
        if (this.outage && s.forwarded > 0) this.logger.info('notification service reachable again: forwarding queued requests');
        this.outage = false;
        outages = 0;
        // A full batch, or rows the half-open breaker held back while its trial ran: go again at once.
        if (s.claimed < this.opts.batchSize && s.skipped === 0) await this.pause(this.opts.pollIntervalMs, true);
      }
    })();
  }

  /**
   * A hint that requests were queued (or, `fromBreaker`, that the breaker allows a trial): ends
   * the current poll pause early. During an outage only the breaker's trial ends the pause, so
   * new orders do not turn the backoff into a busy loop.
   */
  wake(fromBreaker = false): void {
    const kind = fromBreaker ? 'breaker' : 'queued';
    if (this.pendingWake !== 'breaker') this.pendingWake = kind;
    this.wakeUp?.(kind);
  }

  /** Stops the loop; Sends in flight finish (bounded by deadline x attempts) and the batch commits. */
  async stop(): Promise<void> {
    this.stopping?.abort();
    await this.loop;
    this.loop = undefined;
  }

  /** Stops the loop and closes the gRPC client (its breaker and channel). */
  async close(): Promise<void> {
    await this.stop();
    this.client.close();
  }

  /** Sleeps `ms`; a `queued` wake ends it only if `wakeable`, a `breaker` wake always, stop always. */
  private async pause(ms: number, wakeable: boolean): Promise<void> {
    const pending = this.pendingWake;
    if (pending === 'breaker' || (pending === 'queued' && wakeable)) {
      this.pendingWake = null;
      return;
    }
    const wake = new AbortController();
    const signal = this.stopping ? AbortSignal.any([this.stopping.signal, wake.signal]) : wake.signal;
    this.wakeUp = (kind) => {
      if (kind === 'breaker' || wakeable) wake.abort();
    };
    try {
      await sleep(ms, signal);
    } finally {
      this.wakeUp = null;
      this.pendingWake = null;
    }
  }

  /** One Send with the request's own id and the order request's context; never throws. */
  private async send(row: ForwardRequestRow): Promise<{ error: unknown } | null> {
    const request: SendRequest = { id: row.id, userId: row.user_id, channel: row.channel, template: row.template, dataJson: JSON.stringify(row.data) };
    try {
      await runWithContext({ requestId: row.request_id ?? newRequestId(), ...(row.traceparent ? { traceparent: row.traceparent } : {}) }, () =>
        this.client.call<SendRequest, NotificationReply>('Send', request),
      );
      return null;
    } catch (error) {
      return { error };
    }
  }

  private async record(trx: Knex.Transaction, row: ForwardRequestRow, failed: { error: unknown } | null): Promise<Outcome> {
    if (!failed) {
      await deleteRequest(trx, row.id);
      this.forwardedTotal.inc();
      return 'forwarded';
    }
    const reason = classify(failed.error);
    this.failures.inc({ reason });
    const error = describe(failed.error);
    const attempts = row.attempts + 1;
    switch (reason) {
      case 'rejected':
        await markRequestFailed(trx, row.id, attempts, error);
        this.logger.warn({ notificationId: row.id, error }, 'notification service refused the request; marked failed');
        return 'rejected';
      case 'circuit_open':
        return 'skipped';
      case 'unavailable':
        await recordAttempt(trx, row.id, attempts, error, 0);
        return 'retrying';
      case 'error':
        await recordAttempt(trx, row.id, attempts, error, Math.min(this.opts.retryMaxMs, this.opts.retryBaseMs * 2 ** Math.min(row.attempts, 30)));
        this.logger.warn({ notificationId: row.id, attempts, error }, 'forwarding a notification request failed; retrying later');
        return 'retrying';
    }
  }
}

/**
 * rejected: the service answered with a 4xx (it will refuse this request again).
 * circuit_open: the breaker refused the call (EOPENBREAKER, or the client's UNAVAILABLE wrapping it).
 * unavailable: the service could not be reached, or said it cannot serve now (503): not the request's fault.
 * error: anything else (deadline exceeded, 5xx): possibly the request's own problem.
 */
function classify(err: unknown): Failure {
  const code = (err as { code?: unknown } | null)?.code;
  const causeCode = (err as { cause?: { code?: unknown } } | null)?.cause?.code;
  if (code === 'EOPENBREAKER' || (code === 'UNAVAILABLE' && causeCode === 'EOPENBREAKER')) return 'circuit_open';
  if (isAppError(err) && err.status < 500) return 'rejected';
  if (isAppError(err) && err.status === 503) return 'unavailable';
  return 'error';
}

function describe(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return (typeof e?.code === 'string' ? `${e.code}: ${message}` : message).slice(0, 1_000);
}
