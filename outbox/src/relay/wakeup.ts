/**
 * A latch the relay sleeps on: `notify()` wakes the sleeper, or, when nobody sleeps, makes the
 * next `wait()` return at once, so a NOTIFY that lands mid-batch is never lost.
 */
export class Wakeup {
  private pending = false;
  private wakeSleeper: (() => void) | null = null;

  notify(): void {
    this.pending = true;
    this.wakeSleeper?.();
  }

  /** Returns after `ms`, on `notify()`, or when `signal` aborts; true if woken by `notify()`. */
  wait(ms: number, signal: AbortSignal): Promise<boolean> {
    if (this.pending || signal.aborted) {
      const woken = this.pending;
      this.pending = false;
      return Promise.resolve(woken);
    }
    return new Promise((resolve) => {
      const finish = (woken: boolean) => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        this.wakeSleeper = null;
        this.pending = false;
        resolve(woken);
      };
      const onAbort = () => finish(false);
      const timer = setTimeout(() => finish(false), ms);
      signal.addEventListener('abort', onAbort, { once: true });
      this.wakeSleeper = () => finish(true);
    });
  }
}
