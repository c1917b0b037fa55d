import { afterEach, describe, expect, it, vi } from 'vitest';
import { ReconnectBackoff } from '../src/retry.ts';

afterEach(() => vi.restoreAllMocks());

describe('ReconnectBackoff', () => {
  // Every jitter at its top: delay() is 50 ms plus the ceiling for the failures so far.
  const ceilings = (b: ReconnectBackoff) => b.delay() - 50;

  it('grows with failed attempts and with connections dropped soon after they opened; a connection that held starts it over', () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.999_999);
    let now = 0;
    vi.spyOn(performance, 'now').mockImplementation(() => now);
    const b = new ReconnectBackoff({ baseMs: 250, maxMs: 5_000, stableMs: 10_000 });
    expect(ceilings(b)).toBe(249);
    b.failed();
    expect(ceilings(b)).toBe(499);
    b.opened();
    now += 100; // dropped 100 ms after it opened: as bad as a failed attempt
    b.closed();
    expect(ceilings(b)).toBe(999);
    for (let i = 0; i < 10; i++) b.failed();
    expect(ceilings(b)).toBe(4_999);
    b.opened();
    now += 10_000; // held for stableMs
    b.closed();
    expect(ceilings(b)).toBe(249);
    b.closed(); // no connection open: nothing to count
    expect(ceilings(b)).toBe(249);
    b.opened();
    now += 100;
    b.abandoned(); // closed by us, however soon: not the server's doing
    b.closed();
    expect(ceilings(b)).toBe(249);
  });
});
