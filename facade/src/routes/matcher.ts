/**
 * Path patterns and the precompiled matcher the hot path uses.
 *
 * Patterns: `/api/notifications`, `/api/notifications/:id`, `/static/*` (`*` only last: zero or
 * more further segments). Matching looks at the path only, never the query string; static
 * segments compare case-insensitively (as Express does by default); one trailing slash is
 * ignored. Precedence: a route for the exact method beats a `*` (any method) route; within a
 * method, a static segment beats `:param`, which beats `*`. HEAD requests use GET routes when no
 * HEAD route matches. The matcher is a segment trie built once per route table: a lookup
 * allocates only the split path, and no regular expression is built or run per request.
 */

export type PatternSegment = { kind: 'static'; value: string } | { kind: 'param'; name: string } | { kind: 'rest' };

const PARAM = /^:([A-Za-z_]\w*)$/;

/** Parses a path pattern, or returns a message saying what to fix. */
export function parsePattern(pattern: string): PatternSegment[] | string {
  if (!pattern.startsWith('/')) return `must start with "/", e.g. /api/notifications/:id`;
  if (/[?#]/.test(pattern)) return 'must be a path only: routes match the path, never the query string (remove "?..." )';
  if (/\s/.test(pattern)) return 'must not contain spaces';
  const trimmed = pattern.length > 1 && pattern.endsWith('/') ? pattern.slice(0, -1) : pattern;
  if (trimmed === '/') return [];
  const parts = trimmed.slice(1).split('/');
  const out: PatternSegment[] = [];
  const names = new Set<string>();
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === '') return 'must not contain empty segments ("//")';
    if (part === '*') {
      if (i !== parts.length - 1) return '"*" may only be the last segment (it matches the rest of the path)';
      out.push({ kind: 'rest' });
    } else if (part.startsWith(':')) {
      const m = PARAM.exec(part);
      if (!m) return `segment "${part}" is not a valid parameter: use ":" and a name such as :id`;
      if (names.has(m[1]!)) return `parameter :${m[1]} appears twice`;
      names.add(m[1]!);
      out.push({ kind: 'param', name: m[1]! });
    } else if (/[:*]/.test(part)) {
      return `segment "${part}" mixes text with ":" or "*": a parameter or "*" must be a whole segment`;
    } else {
      out.push({ kind: 'static', value: part.toLowerCase() });
    }
  }
  return out;
}

/** Two patterns with the same key match exactly the same paths. */
export function patternKey(segments: PatternSegment[]): string {
  return `/${segments.map((s) => (s.kind === 'static' ? s.value : s.kind === 'param' ? ':' : '*')).join('/')}`;
}

interface Node<T> {
  statics: Map<string, Node<T>> | null;
  param: Node<T> | null;
  rest: T | null;
  value: T | null;
}

const node = <T>(): Node<T> => ({ statics: null, param: null, rest: null, value: null });

export interface MatcherEntry<T> {
  method: string;
  segments: PatternSegment[];
  value: T;
}

export interface Matcher<T> {
  /** The value of the best matching route for `method` and the path part of `url`, or null. */
  match(method: string, url: string): T | null;
}

export function compileMatcher<T>(entries: Iterable<MatcherEntry<T>>): Matcher<T> {
  const tries = new Map<string, Node<T>>();
  for (const entry of entries) {
    let root = tries.get(entry.method);
    if (!root) tries.set(entry.method, (root = node<T>()));
    let at = root;
    for (const seg of entry.segments) {
      if (seg.kind === 'rest') {
        at.rest = entry.value;
        break;
      }
      if (seg.kind === 'param') at = at.param ??= node<T>();
      else {
        at.statics ??= new Map();
        let next = at.statics.get(seg.value);
        if (!next) at.statics.set(seg.value, (next = node<T>()));
        at = next;
      }
    }
    if (entry.segments.at(-1)?.kind !== 'rest') at.value = entry.value;
  }
  const any = tries.get('*') ?? null;
  const get = tries.get('GET') ?? null;

  const find = (n: Node<T>, segs: string[], i: number): T | null => {
    if (i === segs.length) return n.value ?? n.rest;
    const seg = segs[i]!;
    const next = n.statics?.get(seg);
    if (next) {
      const found = find(next, segs, i + 1);
      if (found !== null) return found;
    }
    if (n.param && seg !== '') {
      const found = find(n.param, segs, i + 1);
      if (found !== null) return found;
    }
    return n.rest;
  };

  return {
    match(method, url) {
      const q = url.indexOf('?');
      let path = q < 0 ? url : url.slice(0, q);
      if (path.charCodeAt(0) !== 47 /* / */) return null;
      if (path.length > 1 && path.charCodeAt(path.length - 1) === 47) path = path.slice(0, -1);
      const segs = path === '/' ? [] : path.slice(1).toLowerCase().split('/');
      const own = tries.get(method);
      let found = own ? find(own, segs, 0) : null;
      if (found === null && method === 'HEAD' && get) found = find(get, segs, 0);
      if (found === null && any) found = find(any, segs, 0);
      return found;
    },
  };
}
