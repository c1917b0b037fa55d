import { formatPath, pathMatches, type PathPattern, type PathSegment } from './json-path.ts';
import type { NormalResponse, Normaliser } from './normalise.ts';

/**
 * A structured diff between two normalised responses. Paths: `(status)`, `(header <name>)`,
 * `(body)` for non-JSON bodies, and JSON paths such as `$.items[2].name`. `canonical` writes
 * every index as `[*]`, which is how noise is learned and matched.
 */
export interface DiffEntry {
  path: string;
  canonical: string;
  kind: 'changed' | 'missing' | 'extra' | 'type';
  primary?: unknown;
  candidate?: unknown;
}

/** Entries beyond this many are dropped from one comparison (the count still says "mismatch"). */
export const MAX_DIFF_ENTRIES = 50;
const MAX_VALUE_CHARS = 200;

export function diffResponses(primary: NormalResponse, candidate: NormalResponse, n: Pick<Normaliser, 'ignore'>): DiffEntry[] {
  const out: DiffEntry[] = [];
  if (primary.status !== candidate.status) out.push({ path: '(status)', canonical: '(status)', kind: 'changed', primary: primary.status, candidate: candidate.status });
  for (const name of Object.keys(primary.headers)) {
    const a = primary.headers[name];
    const b = candidate.headers[name];
    if (a !== b) {
      const path = `(header ${name})`;
      out.push({ path, canonical: path, kind: a === undefined ? 'extra' : b === undefined ? 'missing' : 'changed', primary: a, candidate: b });
    }
  }
  const pb = primary.body;
  const cb = candidate.body;
  if (pb.kind === 'json' && cb.kind === 'json') diffValues(pb.value, cb.value, [], out, n.ignore);
  else if (pb.kind !== cb.kind || !(pb.value as Buffer).equals(cb.value as Buffer)) {
    out.push({ path: '(body)', canonical: '(body)', kind: 'changed', primary: preview(pb), candidate: preview(cb) });
  }
  return out;
}

/** Appends the differences between `a` (primary) and `b` (candidate) under `path` to `out`, skipping `ignore`d subtrees. */
export function diffValues(a: unknown, b: unknown, path: PathSegment[], out: DiffEntry[], ignore: readonly PathPattern[] = []): void {
  if (out.length >= MAX_DIFF_ENTRIES || a === b) return;
  if (ignore.length && ignore.some((p) => pathMatches(path, p))) return;
  const ta = typeOf(a);
  const tb = typeOf(b);
  if (ta !== tb) return push(out, path, 'type', a, b);
  if (ta === 'array') {
    const xa = a as unknown[];
    const xb = b as unknown[];
    const n = Math.max(xa.length, xb.length);
    for (let i = 0; i < n && out.length < MAX_DIFF_ENTRIES; i++) {
      path.push(i);
      if (i >= xb.length) push(out, path, 'missing', xa[i], undefined, ignore);
      else if (i >= xa.length) push(out, path, 'extra', undefined, xb[i], ignore);
      else diffValues(xa[i], xb[i], path, out, ignore);
      path.pop();
    }
    return;
  }
  if (ta === 'object') {
    const oa = a as Record<string, unknown>;
    const ob = b as Record<string, unknown>;
    for (const k of Object.keys(oa)) {
      path.push(k);
      if (!Object.hasOwn(ob, k)) push(out, path, 'missing', oa[k], undefined, ignore);
      else diffValues(oa[k], ob[k], path, out, ignore);
      path.pop();
    }
    for (const k of Object.keys(ob)) {
      if (Object.hasOwn(oa, k)) continue;
      path.push(k);
      push(out, path, 'extra', undefined, ob[k], ignore);
      path.pop();
    }
    return;
  }
  push(out, path, 'changed', a, b);
}

function push(out: DiffEntry[], path: PathSegment[], kind: DiffEntry['kind'], a: unknown, b: unknown, ignore: readonly PathPattern[] = []) {
  if (out.length >= MAX_DIFF_ENTRIES) return;
  if (ignore.length && ignore.some((p) => pathMatches(path, p))) return;
  const entry: DiffEntry = { path: formatPath(path), canonical: formatPath(path, true), kind };
  if (a !== undefined) entry.primary = clip(a);
  if (b !== undefined) entry.candidate = clip(b);
  out.push(entry);
}

const typeOf = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function clip(v: unknown): unknown {
  if (typeof v === 'string') return v.length > MAX_VALUE_CHARS ? `${v.slice(0, MAX_VALUE_CHARS)}…` : v;
  if (v !== null && typeof v === 'object') {
    const s = JSON.stringify(v);
    return s.length > MAX_VALUE_CHARS ? `${s.slice(0, MAX_VALUE_CHARS)}…` : v;
  }
  return v;
}

function preview(body: { kind: string; value: unknown }): string {
  if (body.kind === 'json') return clip(JSON.stringify(body.value)) as string;
  const buf = body.value as Buffer;
  return `${buf.length} bytes: ${clip(buf.toString('utf8', 0, Math.min(buf.length, MAX_VALUE_CHARS * 2)))}`;
}
