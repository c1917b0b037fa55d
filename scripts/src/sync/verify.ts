import type { Knex } from 'knex';
import { canonical, rowHash } from './canonical.ts';
import { comparedColumns, sourceSelect, type SyncSpec } from './spec.ts';

export type Difference =
  | { kind: 'missing'; key: string }
  | { kind: 'extra'; key: string }
  | { kind: 'changed'; key: string; fields: Record<string, { monolith: unknown; service: unknown }> };

export interface VerifyReport {
  spec: string;
  sourceRows: number;
  targetRows: number;
  differences: number;
  /** The first `maxExamples` differences, in key order. */
  examples: Difference[];
}

export interface VerifyOptions {
  chunkSize?: number;
  maxExamples?: number;
  /**
   * Events may still be in flight when verify runs: a differing row is read again up to
   * `settleAttempts` times, `settleMs` apart, before it counts (defaults 3 and 1,000 ms).
   */
  settleAttempts?: number;
  settleMs?: number;
  onProgress?: (checked: number) => void;
}

type Row = Record<string, unknown>;

/**
 * Compares the monolith's and the service's copies of `spec` chunk by chunk, walking both in key
 * order like a merge join: each chunk is the next `chunkSize` source keys, and the target rows in
 * the same key range, so extra rows on the service's side are found too. Rows are compared by a
 * hash of the synced fields (canonicalised: see canonical.ts); a differing row is re-read before
 * it is reported.
 */
export async function verify(source: Knex, target: Knex, spec: SyncSpec, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const { chunkSize = 2_000, maxExamples = 20, settleAttempts = 3, settleMs = 1_000 } = opts;
  const cols = comparedColumns(spec);
  const select = sourceSelect(spec);
  const sourceQuery = () => {
    const q = source(spec.source.table).select(source.raw(select.join(', ')));
    if (spec.source.where) q.whereRaw(spec.source.where);
    return q;
  };
  const targetQuery = () => target(spec.target.table).select(cols.map((c) => target.raw(`"${c}"`)));

  let suspects: string[] = [];
  let sourceRows = 0;
  let targetRows = 0;
  let lastKey: string | null = null;
  for (;;) {
    const sq = sourceQuery().orderBy(spec.key).limit(chunkSize);
    if (lastKey !== null) sq.where(spec.key, '>', lastKey);
    const src = (await sq) as Row[];
    const upper = src.length === chunkSize ? String(src[src.length - 1]![spec.key]) : null;
    const tq = targetQuery().orderBy(spec.key);
    if (lastKey !== null) tq.where(spec.key, '>', lastKey);
    if (upper !== null) tq.where(spec.key, '<=', upper);
    const dst = (await tq) as Row[];
    sourceRows += src.length;
    targetRows += dst.length;
    suspects.push(...diffKeys(src, dst, spec.key, cols));
    opts.onProgress?.(sourceRows);
    if (upper === null) break;
    lastKey = upper;
  }

  let differences: Difference[] = [];
  for (let attempt = 0; attempt <= settleAttempts && suspects.length; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, settleMs));
    // In chunks: one statement takes at most 65,535 parameters, and every row may differ (a
    // verify run before the backfill).
    differences = [];
    for (let i = 0; i < suspects.length; i += chunkSize) {
      const keys = suspects.slice(i, i + chunkSize);
      const src = (await sourceQuery().whereIn(spec.key, keys).orderBy(spec.key)) as Row[];
      const dst = (await targetQuery().whereIn(spec.key, keys).orderBy(spec.key)) as Row[];
      differences.push(...describe(src, dst, spec.key, cols));
    }
    suspects = differences.map((d) => d.key);
  }
  return { spec: spec.name, sourceRows, targetRows, differences: differences.length, examples: differences.slice(0, maxExamples) };
}

function diffKeys(src: Row[], dst: Row[], key: string, cols: string[]): string[] {
  const hashes = new Map(dst.map((r) => [String(r[key]), rowHash(r, cols)]));
  const out: string[] = [];
  for (const r of src) {
    const k = String(r[key]);
    if (hashes.get(k) !== rowHash(r, cols)) out.push(k);
    hashes.delete(k);
  }
  out.push(...hashes.keys());
  return out;
}

function describe(src: Row[], dst: Row[], key: string, cols: string[]): Difference[] {
  const byKey = new Map(dst.map((r) => [String(r[key]), r]));
  const out: Difference[] = [];
  for (const s of src) {
    const k = String(s[key]);
    const d = byKey.get(k);
    byKey.delete(k);
    if (!d) {
      out.push({ kind: 'missing', key: k });
      continue;
    }
    const fields: Record<string, { monolith: unknown; service: unknown }> = {};
    for (const c of cols) {
      const a = canonical(s[c]);
      const b = canonical(d[c]);
      if (JSON.stringify(a) !== JSON.stringify(b)) fields[c] = { monolith: a, service: b };
    }
    if (Object.keys(fields).length) out.push({ kind: 'changed', key: k, fields });
  }
  for (const k of byKey.keys()) out.push({ kind: 'extra', key: k });
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
