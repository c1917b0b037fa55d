import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * A constant-time check of a presented token against the configured one: both are hashed first,
 * so the comparison neither leaks the token's length nor stops at the first differing byte.
 */
export function tokenChecker(expected: string): (given: string | undefined | null) => boolean {
  const want = createHash('sha256').update(expected).digest();
  return (given) => {
    if (!given) return false;
    return timingSafeEqual(createHash('sha256').update(given).digest(), want);
  };
}
