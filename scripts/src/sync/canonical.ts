import { createHash } from 'node:crypto';

/**
 * A stable form of a row's value: dates as ISO 8601 UTC, binary as base64, JSON objects with
 * sorted keys. Nothing else is converted: a string and a number are different values (a
 * service that turned `"007"` into `7`, or a JSON number into a string, differs), and bigint
 * columns already arrive as numbers (platform/db.ts). A column whose type differs between the
 * two sides is cast in the spec's `sourceExpr` (e.g. `amount::bigint`).
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
  return value;
}

export function rowHash(row: Record<string, unknown>, columns: string[]): string {
  const hash = createHash('sha1');
  for (const c of columns) hash.update(JSON.stringify(canonical(row[c]))).update('\u0000');
  return hash.digest('hex');
}
