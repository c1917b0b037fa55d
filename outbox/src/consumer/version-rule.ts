export type VersionDecision = 'apply' | 'stale' | 'gap';

/**
 * DESIGN.md "Data ownership": apply only the next version. `local` is the entity's version in
 * the consumer's database, null when it has no such entity. An absent entity counts as version 0,
 * so only version 1 applies, unless `acceptFirstSeen` (for consumers that start mid-stream, e.g.
 * after a backfill of only some entities), which applies whatever version comes first.
 * Older or equal: `stale` (a duplicate; acknowledged without effect). Newer by more than one:
 * `gap` (retried later, never applied out of order).
 */
export function decideVersion(local: number | null, incoming: number, acceptFirstSeen = false): VersionDecision {
  if (local === null && acceptFirstSeen) return 'apply';
  const current = local ?? 0;
  if (incoming <= current) return 'stale';
  return incoming === current + 1 ? 'apply' : 'gap';
}
