import type { DiffEntry } from './diff.ts';

export interface Mismatch {
  at: string;
  routeId: string;
  requestId: string;
  method: string;
  url: string;
  primary: string;
  candidate: string;
  diff: DiffEntry[];
  /** Differences left out because the primary produces them by itself. */
  noise: string[];
}

export type ShadowResult = 'match' | 'mismatch' | 'error' | 'skipped';

export interface ShadowCounts {
  compared: number;
  mismatches: number;
  errors: number;
  skipped: number;
}

/**
 * Keeps the latest mismatches (a ring of `capacity`, oldest dropped first) and per-route counts
 * for the admin API; the metrics and the log get every result as it happens.
 */
export class ShadowRecorder {
  private readonly ring: Mismatch[] = [];
  private readonly counts = new Map<string, ShadowCounts>();

  constructor(private readonly capacity = 1_000) {}

  count(routeId: string, result: ShadowResult): ShadowCounts {
    let c = this.counts.get(routeId);
    if (!c) this.counts.set(routeId, (c = { compared: 0, mismatches: 0, errors: 0, skipped: 0 }));
    if (result === 'match' || result === 'mismatch') c.compared++;
    if (result === 'mismatch') c.mismatches++;
    if (result === 'error') c.errors++;
    if (result === 'skipped') c.skipped++;
    return c;
  }

  record(m: Mismatch): void {
    this.ring.push(m);
    if (this.ring.length > this.capacity) this.ring.shift();
  }

  stats(routeId: string): ShadowCounts & { mismatchRate: number | null } {
    const c = this.counts.get(routeId) ?? { compared: 0, mismatches: 0, errors: 0, skipped: 0 };
    return { ...c, mismatchRate: c.compared ? c.mismatches / c.compared : null };
  }

  routes(): string[] {
    return [...this.counts.keys()];
  }

  /** Newest first. */
  list({ routeId, limit = 100 }: { routeId?: string; limit?: number } = {}): Mismatch[] {
    const out: Mismatch[] = [];
    for (let i = this.ring.length - 1; i >= 0 && out.length < limit; i--) {
      const m = this.ring[i]!;
      if (!routeId || m.routeId === routeId) out.push(m);
    }
    return out;
  }
}
