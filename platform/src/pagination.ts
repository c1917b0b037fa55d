import { z } from 'zod';

/**
 * Keyset pagination shared by every listing of the system (DESIGN.md API: `?limit&cursor`,
 * `{items, nextCursor}`). It lives here, not in the monolith, because a cursor is part of the
 * contract: a client paging across a flip hands the service a cursor the monolith issued (and
 * back), so both sides must encode and read it identically.
 */
export interface Cursor {
  createdAt: string;
  id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A timestamp the API issues (Date#toISOString), exactly: not whatever Date.parse accepts ("1"
 * is the year 2001 to it, 2024-02-30 the 1st of March), which Postgres may refuse.
 */
function isIssuedTimestamp(text: string): boolean {
  const date = new Date(text);
  return !Number.isNaN(date.getTime()) && date.toISOString() === text;
}

/** Opaque keyset cursor: base64url of `[createdAt, id]` of the last item of the previous page. */
export const encodeCursor = (c: Cursor): string => Buffer.from(JSON.stringify([c.createdAt, c.id])).toString('base64url');

/** The cursor `text` encodes, or null when it is not one `encodeCursor` could have issued. */
export function decodeCursor(text: string): Cursor | null {
  try {
    const value: unknown = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
    if (!Array.isArray(value) || value.length !== 2) return null;
    const [createdAt, id] = value as unknown[];
    if (typeof createdAt !== 'string' || !isIssuedTimestamp(createdAt) || typeof id !== 'string' || !UUID.test(id)) return null;
    return { createdAt, id };
  } catch {
    return null;
  }
}

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

export const INVALID_CURSOR_MESSAGE = 'Not a cursor this API issued; pass nextCursor from the previous page.';

/**
 * `?limit&cursor` of every listing: limit 1..100 (default 20); cursor as returned in
 * `nextCursor`. Other query parameters are ignored.
 */
export const pageQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(MAX_PAGE_SIZE).default(DEFAULT_PAGE_SIZE),
  cursor: z
    .string()
    .transform((text, ctx) => {
      const cursor = decodeCursor(text);
      if (!cursor) {
        ctx.addIssue({ code: 'custom', message: INVALID_CURSOR_MESSAGE });
        return z.NEVER;
      }
      return cursor;
    })
    .optional(),
});
export type PageQuery = z.infer<typeof pageQuerySchema>;

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** Turns `limit + 1` rows (newest first) into a page and the cursor of the next one. */
export function toPage<R, T extends { id: string; createdAt: string }>(rows: R[], limit: number, map: (row: R) => T): Page<T> {
  const items = rows.slice(0, limit).map(map);
  const last = items[items.length - 1];
  return { items, nextCursor: rows.length > limit && last ? encodeCursor({ createdAt: last.createdAt, id: last.id }) : null };
}
