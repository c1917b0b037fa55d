import CircuitBreaker from 'opossum';
import type { BreakerSpec } from './routes/schema.ts';

/**
 * One opossum breaker per upstream, created once when the upstream first appears in a route
 * table and kept across reloads while its settings stay the same (a breaker per request never
 * opens). What counts as a failure: connection errors (refused, reset, DNS), timeouts to the
 * response headers, and 5xx responses. 4xx responses are the client's problem and are filtered
 * out (they count as successes: the upstream answered). While open, calls fail at once with
 * EOPENBREAKER without touching the upstream (so a request may safely go elsewhere); after
 * `resetTimeoutMs` one trial call is let through (half-open) and its outcome closes or reopens it.
 *
 * A client that hangs up before the upstream answers says nothing about the upstream, so that
 * outcome (ECLIENTGONE) is kept out of the breaker entirely: it is neither a success nor a
 * failure, and it is not counted as a call either (see `createBreaker`). In half-open, a trial
 * abandoned by its client leaves the breaker half-open and the next request becomes the trial.
 * The consequence: the breaker learns about an upstream that accepts requests and never answers
 * only from attempts that reach `timeoutMs`, so keep `timeoutMs` below the patience of the
 * clients in front of the facade (hence the 10 s default).
 */

/** Rejection for an upstream response with status >= 400; the response is already streaming to the client. */
export interface StatusOutcome {
  code: 'EUPSTREAM_STATUS';
  status: number;
}
/** Rejection when the client went away before the upstream answered (not the upstream's fault). */
export const CLIENT_GONE = Object.freeze({ code: 'ECLIENTGONE' as const });

export interface BreakerSettings {
  /** Idle time before the response headers after which an attempt fails with ETIMEDOUT (enforced per attempt, see proxy.ts). */
  timeoutMs: number;
  errorThresholdPercentage: number;
  resetTimeoutMs: number;
  volumeThreshold: number;
  rollingWindowMs: number;
}

/**
 * timeoutMs 10 s: above the deadlines our upstreams enforce themselves (the monolith gives the
 * payment provider 3 s and notification providers 5 s, and answers its own 504), so they report
 * their own errors first; and at or under what common clients wait (OkHttp's read timeout is
 * 10 s, browsers and load balancers wait 60 s or more), so a hung upstream times out here, counts
 * as a breaker failure and opens the breaker, instead of every client giving up first (which the
 * breaker ignores). Upstreams with slow endpoints set their own `timeoutMs`.
 */
export const DEFAULT_BREAKER: BreakerSettings = {
  timeoutMs: 10_000,
  errorThresholdPercentage: 50,
  resetTimeoutMs: 5_000,
  volumeThreshold: 10,
  rollingWindowMs: 10_000,
};

export type Breaker = CircuitBreaker<[() => Promise<unknown>], unknown>;
export type BreakerState = 'closed' | 'open' | 'half-open';

export function breakerSettings(defaults: BreakerSettings, timeoutMs: number | undefined, spec: BreakerSpec | undefined): BreakerSettings {
  return {
    timeoutMs: timeoutMs ?? defaults.timeoutMs,
    errorThresholdPercentage: spec?.errorThresholdPercentage ?? defaults.errorThresholdPercentage,
    resetTimeoutMs: spec?.resetTimeoutMs ?? defaults.resetTimeoutMs,
    volumeThreshold: spec?.volumeThreshold ?? defaults.volumeThreshold,
    rollingWindowMs: spec?.rollingWindowMs ?? defaults.rollingWindowMs,
  };
}

const isClientGone = (value: unknown): boolean => (value as { code?: unknown } | null)?.code === 'ECLIENTGONE';

/** Errors opossum must not count as failures: 4xx answers (a success) and a client gone (neutral, see below). */
const ignored = (err: unknown): boolean => {
  const e = err as { code?: string; status?: number } | null;
  if (e?.code === 'EUPSTREAM_STATUS') return (e.status ?? 500) < 500;
  return isClientGone(e);
};

/**
 * The action is the call itself: `breaker.fire(() => send(...))`, so one breaker serves every
 * request. Opossum's own timer is off: it counts from the call, which would cut off a long
 * upload; each attempt enforces `timeoutMs` as socket idle time instead and fails with
 * ETIMEDOUT, which the breaker counts like any failure.
 */
export function createBreaker(name: string, s: BreakerSettings): Breaker {
  const breaker: Breaker = new CircuitBreaker((call: () => Promise<unknown>) => call(), {
    name,
    timeout: false,
    errorThresholdPercentage: s.errorThresholdPercentage,
    resetTimeout: s.resetTimeoutMs,
    volumeThreshold: s.volumeThreshold,
    rollingCountTimeout: s.rollingWindowMs,
    rollingCountBuckets: 10,
    rollingPercentilesEnabled: false,
    enableSnapshots: false,
    errorFilter: ignored,
  });
  keepClientGoneNeutral(breaker);
  return breaker;
}

/**
 * Opossum knows two outcomes: an error its errorFilter accepts is emitted as `success` (it
 * counts as one and closes a half-open breaker), any other as `failure`; and every call is
 * counted as a `fire` when it starts. A client gone is neither, so this breaker's events are
 * adjusted on the way out (opossum keeps its statistics and its half-open rule in listeners of
 * its own events):
 * - `fire` is not counted when the call starts but when its outcome is known: with a success, a
 *   failure or a rejection (open breaker), exactly the calls opossum would count, minus the
 *   client-gone ones. The error rate is then failures / calls that ended, over the window.
 * - the `success` opossum emits for a client gone is dropped: no success is counted and a
 *   half-open breaker does not close. Opossum has already used up its single half-open trial
 *   (its pending-close flag, cleared when the trial started), so it is set again: the next
 *   request becomes the trial. That flag has no public setter; it is found by its symbol's
 *   description, checked here so an opossum upgrade that renames it fails at start-up, loudly.
 */
function keepClientGoneNeutral(breaker: Breaker): void {
  const pendingClose = Object.getOwnPropertySymbols(breaker).find((sym) => sym.description === 'pending-close');
  const status = breaker.status as CircuitBreaker.Status & { increment?: (property: 'fires') => void };
  if (!pendingClose || typeof (breaker as unknown as Record<symbol, unknown>)[pendingClose] !== 'boolean' || typeof status.increment !== 'function') {
    throw new Error('opossum internals changed: the pending-close flag (re-armed after an abandoned half-open trial) or Status.increment is gone; check breakers.ts against this opossum version');
  }
  const emit = breaker.emit.bind(breaker);
  breaker.emit = (event: string | symbol, ...args: unknown[]): boolean => {
    switch (event) {
      case 'fire':
        return false;
      case 'success':
        if (isClientGone(args[0])) {
          if (breaker.halfOpen) (breaker as unknown as Record<symbol, boolean>)[pendingClose] = true;
          return false;
        }
        status.increment!('fires');
        break;
      case 'failure':
      case 'reject':
        status.increment!('fires');
        break;
    }
    return emit(event, ...args);
  };
}

export function breakerState(b: Breaker): BreakerState {
  if (b.opened) return 'open';
  if (b.halfOpen) return 'half-open';
  return 'closed';
}
