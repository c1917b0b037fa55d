/**
 * How one entity is copied from the monolith to a service (backfill) and compared (verify).
 * Both sides key rows by `key` and carry the entity's integer `version` (DESIGN.md "Data
 * ownership"). A service's extraction declares one spec per table it takes over, in dependency
 * order (users before the notifications that reference them).
 */
export interface SyncSpec {
  /** Name used in progress output, checkpoints and reports, e.g. `notifications`. */
  name: string;
  source: {
    table: string;
    /** Optional SQL filter on the source rows (e.g. rows the service owns). */
    where?: string;
  };
  target: { table: string };
  /** Primary key column, the same name on both sides; rows are walked in its order. */
  key: string;
  /** Version column, the same name on both sides. */
  version: string;
  /**
   * Columns copied and compared (target column names). Each maps to itself in the source unless
   * `sourceExpr` gives an SQL expression for it (a rename or a derived value).
   */
  columns: string[];
  sourceExpr?: Record<string, string>;
  /** Columns copied but not compared by verify (e.g. ones the service recomputes). */
  notCompared?: string[];
}

export function sourceSelect(spec: SyncSpec): string[] {
  const all = new Set([spec.key, spec.version, ...spec.columns]);
  return [...all].map((c) => (spec.sourceExpr?.[c] ? `${spec.sourceExpr[c]} as "${c}"` : `"${c}"`));
}

export function comparedColumns(spec: SyncSpec): string[] {
  const skip = new Set(spec.notCompared ?? []);
  return [...new Set([spec.key, spec.version, ...spec.columns])].filter((c) => !skip.has(c));
}
