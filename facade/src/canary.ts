import type { IncomingMessage } from 'node:http';
import { bearerToken, decodeTokenClaims } from '@strangler/platform';

/**
 * Canary cohorts. A client's bucket is a hash of (route id, key) into 0..9999 and it is in the
 * canary when bucket < percent x 100, so the cohort at 5% is a subset of the cohort at 10%: a user
 * who saw the new side keeps seeing it as the share grows, and different routes get independent
 * cohorts. Without a key (no token, header or cookie) the split is random per request.
 */

export type StickyBy = { kind: 'user' } | { kind: 'header'; name: string } | { kind: 'cookie'; name: string };

export function parseStickyBy(value: string): StickyBy {
  if (value.startsWith('header:')) return { kind: 'header', name: value.slice(7).toLowerCase() };
  if (value.startsWith('cookie:')) return { kind: 'cookie', name: value.slice(7) };
  return { kind: 'user' };
}

/** The key that keeps `req` in its cohort, or undefined when the request carries none. */
export function stickyKey(req: IncomingMessage, by: StickyBy): string | undefined {
  switch (by.kind) {
    case 'user':
      return userOf(req.headers.authorization);
    case 'header': {
      const v = req.headers[by.name];
      return (Array.isArray(v) ? v[0] : v) || undefined;
    }
    case 'cookie':
      return cookieValue(req.headers.cookie, by.name);
  }
}

/**
 * The user (`sub`) of a bearer token, cached per Authorization value: decoding it (a regular
 * expression, base64url, JSON.parse) cost more than the rest of the canary decision, and a client
 * sends the same token with every request until it expires. The result is a pure function of the
 * header, so the cache can never be stale; it is bounded by clearing it when full.
 */
const usersByAuthorization = new Map<string, string>();
const MAX_CACHED_USERS = 10_000;

function userOf(authorization: string | undefined): string | undefined {
  if (!authorization) return undefined;
  let user = usersByAuthorization.get(authorization);
  if (user === undefined) {
    const token = bearerToken(authorization);
    user = (token && decodeTokenClaims(token)?.sub) || ''; // '' caches "no user"
    if (usersByAuthorization.size >= MAX_CACHED_USERS) usersByAuthorization.clear();
    usersByAuthorization.set(authorization, user);
  }
  return user || undefined;
}

export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim() || undefined;
  }
  return undefined;
}

/** 0..9999: FNV-1a over the UTF-16 code units, finished with murmur3's fmix32 for avalanche. */
export function cohortBucket(routeId: string, key: string): number {
  let h = 0x811c9dc5;
  const s = `${routeId}\u0000${key}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % 10_000;
}

/** Whether a request goes to the canary side, given its key (undefined: random split). */
export function inCanary(routeId: string, key: string | undefined, percent: number, random = Math.random): boolean {
  if (percent <= 0) return false;
  if (percent >= 100) return true;
  const bucket = key === undefined ? Math.floor(random() * 10_000) : cohortBucket(routeId, key);
  return bucket < Math.round(percent * 100);
}
