import { createHash } from 'node:crypto';

/**
 * A stable text form of a row's value, so both databases' rows compare equal whatever the
 * driver hands back: dates as ISO 8601 UTC, JSON objects with sorted keys, numeric strings of
 * bigint/numeric columns as numbers.
 */
export function canonical(value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return value.toString('base64');
  if (Array.isArray(value)) return value.map(canonical);
  if (typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value as object)
        .sort()
        .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
    );
  }
  if (typeof value === 'string' && /^-?\d+(\.\d+)?$/.test(value) && value.length < 16) return Number(value);
  return value;
}

export function rowHash(row: Record<string, unknown>, columns: string[]): string {
  const hash = createHash('sha1');
  for (const c of columns) hash.update(JSON.stringify(canonical(row[c]))).update('\u0000');
  return hash.digest('hex');
}
