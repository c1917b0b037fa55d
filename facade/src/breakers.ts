import CircuitBreaker from 'opossum';
import type { BreakerSpec } from './routes/schema.ts';

/**
 * One opossum breaker per upstream, created once when the upstream first appears in a route
 * table and kept across reloads while its settings stay the same (a breaker per request never
 * opens). What counts as a failure: connection errors (refused, reset, DNS), timeouts to the
 * response headers, and 5xx responses. 4xx responses are the client's problem and are filtered
 * out; so is a client that hangs up before the upstream answers. While open, calls fail at once
 * with EOPENBREAKER without touching the upstream (so a request may safely go elsewhere); after
 * `resetTimeoutMs` one trial call is let through (half-open) and its outcome closes or reopens it.
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

export const DEFAULT_BREAKER: BreakerSettings = {
  timeoutMs: 30_000,
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

const ignored = (err: unknown): boolean => {
  const e = err as { code?: string; status?: number } | null;
  if (e?.code === 'EUPSTREAM_STATUS') return (e.status ?? 500) < 500;
  return e?.code === 'ECLIENTGONE';
};

/**
 * The action is the call itself: `breaker.fire(() => send(...))`, so one breaker serves every
 * request. Opossum's own timer is off: it counts from the call, which would cut off a long
 * upload; each attempt enforces `timeoutMs` as socket idle time instead and fails with
 * ETIMEDOUT, which the breaker counts like any failure.
 */
export function createBreaker(name: string, s: BreakerSettings): Breaker {
  return new CircuitBreaker((call: () => Promise<unknown>) => call(), {
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
}

export function breakerState(b: Breaker): BreakerState {
  if (b.opened) return 'open';
  if (b.halfOpen) return 'half-open';
  return 'closed';
}
