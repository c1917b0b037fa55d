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
