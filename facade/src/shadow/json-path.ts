/**
 * JSON paths as the route table writes them: `$.items[*].createdAt`, `meta.*`, `$`. A segment is
 * a key (`.name`), any key (`.*`), an index (`[3]`) or any index (`[*]`). The leading `$` is
 * optional. Concrete paths in diffs use the same syntax with real keys and indices.
 */
export type PathSegment = string | number;
export type PatternSegment = { key: string } | { anyKey: true } | { index: number } | { anyIndex: true };
export type PathPattern = readonly PatternSegment[];

const KEY = /^[A-Za-z_$][\w$-]*/;

/** Parses a JSON path pattern, or returns null when it is not one. */
export function parseJsonPath(source: string): PathPattern | null {
  let s = source.trim();
  if (s.startsWith('$')) s = s.slice(1);
  const out: PatternSegment[] = [];
  let first = true;
  while (s.length) {
    if (s.startsWith('[')) {
      const end = s.indexOf(']');
      if (end < 0) return null;
      const inner = s.slice(1, end);
      if (inner === '*') out.push({ anyIndex: true });
      else if (/^\d+$/.test(inner)) out.push({ index: Number(inner) });
      else if (/^(['"]).*\1$/.test(inner)) out.push({ key: inner.slice(1, -1) });
      else return null;
      s = s.slice(end + 1);
    } else {
      if (s.startsWith('.')) s = s.slice(1);
      else if (!first || source.trim().startsWith('$')) return null;
      if (s.startsWith('*')) {
        out.push({ anyKey: true });
        s = s.slice(1);
        continue;
      }
      const m = KEY.exec(s);
      if (!m) return null;
      out.push({ key: m[0] });
      s = s.slice(m[0].length);
    }
    first = false;
  }
  return out;
}

/** True when `path` is `pattern` or lies under it (patterns name whole subtrees). */
export function pathMatches(path: readonly PathSegment[], pattern: PathPattern, exact = false): boolean {
  if (path.length < pattern.length || (exact && path.length !== pattern.length)) return false;
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    const s = path[i]!;
    if ('anyKey' in p) {
      if (typeof s !== 'string') return false;
    } else if ('anyIndex' in p) {
      if (typeof s !== 'number') return false;
    } else if ('key' in p) {
      if (s !== p.key) return false;
    } else if (s !== p.index) return false;
  }
  return true;
}

/** `['items', 0, 'id']` -> `$.items[0].id`; `canonical` writes every index as `[*]`. */
export function formatPath(path: readonly PathSegment[], canonical = false): string {
  let out = '$';
  for (const s of path) {
    if (typeof s === 'number') out += canonical ? '[*]' : `[${s}]`;
    else out += KEY.test(s) && KEY.exec(s)![0] === s ? `.${s}` : `[${JSON.stringify(s)}]`;
  }
  return out;
}
