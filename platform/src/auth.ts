import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';

/**
 * Bearer tokens: compact JWS (HS256) with `sub` = user id, `iat` and `exp`. The monolith issues
 * them; every service verifies them with the same secret (AUTH_TOKEN_SECRET), so a client keeps
 * its token whichever side answers.
 */
/** The default secret, for development: it is in this repository, so anyone can sign tokens with it. */
export const DEV_TOKEN_SECRET = 'strangler-dev-secret-change-me-in-production';

export const authEnv = {
  AUTH_TOKEN_SECRET: z
    .string()
    .min(32, 'must be at least 32 characters')
    .default(DEV_TOKEN_SECRET)
    // Read when the config loads: a process in production refuses to start with the public secret.
    .refine((v) => v !== DEV_TOKEN_SECRET || process.env.NODE_ENV !== 'production', 'must be set when NODE_ENV=production: the default is public, so anyone could sign a token for any user (e.g. AUTH_TOKEN_SECRET=$(openssl rand -hex 32), the same for every process)'),
  AUTH_TOKEN_TTL_SECONDS: z.coerce.number().int().positive().default(3600),
};

const b64url = (buf: Buffer | string) => Buffer.from(buf).toString('base64url');
const HEADER = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));

export interface TokenClaims {
  sub: string;
  iat: number;
  exp: number;
}

export function signToken(secret: string, sub: string, ttlSeconds: number, now = Date.now()): string {
  const iat = Math.floor(now / 1000);
  const body = b64url(JSON.stringify({ sub, iat, exp: iat + ttlSeconds }));
  const sig = createHmac('sha256', secret).update(`${HEADER}.${body}`).digest('base64url');
  return `${HEADER}.${body}.${sig}`;
}

/** Returns the claims of a valid, unexpired token, or null (bad format, signature or expiry). */
export function verifyToken(secret: string, token: string, now = Date.now()): TokenClaims | null {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== HEADER) return null;
  const expected = createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2]!, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const claims = decodeTokenClaims(token);
  if (!claims || claims.exp * 1000 <= now) return null;
  return claims;
}

/**
 * Reads the claims WITHOUT checking the signature: only for routing decisions such as canary
 * cohorts, never for authorisation (the upstream still verifies the token).
 */
export function decodeTokenClaims(token: string): TokenClaims | null {
  const body = token.split('.')[1];
  if (!body) return null;
  try {
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Partial<TokenClaims>;
    return typeof claims.sub === 'string' && typeof claims.exp === 'number' && typeof claims.iat === 'number' ? (claims as TokenClaims) : null;
  } catch {
    return null;
  }
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string | undefined): string | null {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return m ? m[1]! : null;
}
