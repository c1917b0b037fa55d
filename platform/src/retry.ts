export interface BackoffOptions {
  /** First delay in ms. */
  baseMs?: number;
  /** Upper bound of any delay in ms. */
  maxMs?: number;
}

/**
 * Capped exponential backoff with full jitter: attempt n (0-based) waits a random time in
 * [0, min(maxMs, baseMs * 2^n)]. With the defaults (100 ms, 10 s): up to 100, 200, 400, 800 ms,
 * ..., reaching the 10 s cap at the 8th attempt. Full jitter spreads reconnect storms.
 */
export function backoffDelay(attempt: number, { baseMs = 100, maxMs = 10_000 }: BackoffOptions = {}): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(Math.random() * ceiling);
}

/**
 * Pauses between connection attempts to a server a long-lived connection is kept to (the broker,
 * say): `50 ms + backoffDelay(failures)`, where failures counts failed attempts in a row and
 * connections the server dropped within `stableMs` of opening. Counting only failed attempts is
 * not enough: a server that accepts every connection and then drops it (one in trouble, or a
 * proxy in front of one that is down) would be reconnected to at once, for ever.
 */
export class ReconnectBackoff {
  private failures = 0;
  private openedAt: number | null = null;

  constructor(private readonly opts: BackoffOptions & { stableMs: number }) {}

  /** The pause before the next attempt. */
  delay(): number {
    return 50 + backoffDelay(this.failures, this.opts);
  }

  /** An attempt failed. */
  failed(): void {
    this.failures++;
  }

  /** A connection opened. */
  opened(): void {
    this.openedAt = performance.now();
  }

  /** We closed the open connection ourselves (a channel error, a confirm timeout): that says nothing of the server. */
  abandoned(): void {
    this.openedAt = null;
  }

  /** The open connection was lost: a failure if it was up for less than `stableMs`, else a fresh start. */
  closed(): void {
    if (this.openedAt === null) return;
    const lived = performance.now() - this.openedAt;
    this.openedAt = null;
    this.failures = lived >= this.opts.stableMs ? 0 : this.failures + 1;
  }
}

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/** Whether `promise` settled (resolved or rejected) within `ms`. Never rejects. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export interface RetryOptions extends BackoffOptions {
  attempts: number;
  /** Only errors this returns true for are retried; the rest are thrown at once. */
  retryable: (err: unknown) => boolean;
  signal?: AbortSignal;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

/** Runs `fn` up to `attempts` times, retrying only classified errors, with jittered backoff. */
export async function retry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt + 1 >= opts.attempts || !opts.retryable(err) || opts.signal?.aborted) throw err;
      const delay = backoffDelay(attempt, opts);
      opts.onRetry?.(err, attempt, delay);
      await sleep(delay, opts.signal);
    }
  }
}
