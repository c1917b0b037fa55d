import { describe, expect, it } from 'vitest';
import { authEnv, bearerToken, ConfigError, decodeTokenClaims, loadConfig, signToken, verifyToken } from '../src/index.ts';

const secret = 'x'.repeat(32);

describe('bearer tokens', () => {
  it('round-trips a subject and rejects forged, tampered and expired tokens', () => {
    const token = signToken(secret, 'user-1', 60);
    expect(verifyToken(secret, token)?.sub).toBe('user-1');
    expect(verifyToken('y'.repeat(32), token)).toBeNull();
    const [h, , s] = token.split('.');
    const forgedBody = Buffer.from(JSON.stringify({ sub: 'user-2', iat: 0, exp: 9e9 })).toString('base64url');
    expect(verifyToken(secret, `${h}.${forgedBody}.${s}`)).toBeNull();
    expect(verifyToken(secret, signToken(secret, 'user-1', 60, Date.now() - 120_000))).toBeNull();
    expect(verifyToken(secret, 'not-a-token')).toBeNull();
  });

  it('decodes the subject without verifying, for routing only', () => {
    expect(decodeTokenClaims(signToken('z'.repeat(32), 'user-9', 60))?.sub).toBe('user-9');
    expect(decodeTokenClaims('a.b.c')).toBeNull();
  });

  it('extracts a bearer token from the Authorization header', () => {
    expect(bearerToken('Bearer abc.def.ghi')).toBe('abc.def.ghi');
    expect(bearerToken('Basic abc')).toBeNull();
    expect(bearerToken(undefined)).toBeNull();
  });

  it('refuses to start in production with the public default secret, saying what to set', () => {
    const before = process.env.NODE_ENV;
    try {
      process.env.NODE_ENV = 'development';
      expect(loadConfig(authEnv, {}).AUTH_TOKEN_SECRET).toBe('strangler-dev-secret-change-me-in-production');
      process.env.NODE_ENV = 'production';
      expect(() => loadConfig(authEnv, {})).toThrow(ConfigError);
      expect(() => loadConfig(authEnv, {})).toThrow(/AUTH_TOKEN_SECRET="": must be set when NODE_ENV=production: the default is public/);
      expect(loadConfig(authEnv, { AUTH_TOKEN_SECRET: 's'.repeat(40) }).AUTH_TOKEN_SECRET).toBe('s'.repeat(40));
    } finally {
      if (before === undefined) delete process.env.NODE_ENV;
      else process.env.NODE_ENV = before;
    }
  });
});
