import type { DiffEntry } from './diff.ts';

/**
 * Learns, per route, which parts of the primary's response change by themselves (timestamps,
 * generated ids): for a sample of shadowed requests the primary is asked twice, and every path
 * where its two answers differ is noise. A candidate difference at a noisy path (or under it) is
 * not blamed on the candidate. The first `warmUp` comparisons of a route are always sampled so
 * noise is known before the first mismatch is judged. Memory is bounded: at most `maxPaths`
 * paths per route; learned noise lives as long as the process (a restart relearns it).
 */
export class NoiseLearner {
  private readonly paths = new Map<string, Set<string>>();
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly warmUp = 20,
    private readonly maxPaths = 200,
  ) {}

  /** Whether this comparison should also ask the primary a second time. */
  shouldProbe(routeId: string, samplePercent: number, random = Math.random): boolean {
    const n = this.seen.get(routeId) ?? 0;
    this.seen.set(routeId, n + 1);
    return n < this.warmUp || random() * 100 < samplePercent;
  }

  learn(routeId: string, selfDiff: DiffEntry[]): string[] {
    if (!selfDiff.length) return [];
    let set = this.paths.get(routeId);
    if (!set) this.paths.set(routeId, (set = new Set()));
    const added: string[] = [];
    for (const e of selfDiff) {
      if (set.size >= this.maxPaths) break;
      if (!set.has(e.canonical)) {
        set.add(e.canonical);
        added.push(e.canonical);
      }
    }
    return added;
  }

  /** Splits a candidate diff into what is blamed on the candidate and what is known noise. */
  filter(routeId: string, diff: DiffEntry[]): { kept: DiffEntry[]; noise: DiffEntry[] } {
    const set = this.paths.get(routeId);
    if (!set?.size) return { kept: diff, noise: [] };
    const kept: DiffEntry[] = [];
    const noise: DiffEntry[] = [];
    for (const e of diff) (isNoisy(set, e.canonical) ? noise : kept).push(e);
    return { kept, noise };
  }

  noisyPaths(routeId: string): string[] {
    return [...(this.paths.get(routeId) ?? [])].sort();
  }
}

function isNoisy(set: Set<string>, canonical: string): boolean {
  if (set.has(canonical)) return true;
  for (const p of set) if (canonical.startsWith(p) && (canonical[p.length] === '.' || canonical[p.length] === '[')) return true;
  return false;
}
