import { decodeCursor } from '@strangler/platform';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

/**
 * Makes one side's responses comparable with the other's. Both sides start from the same data
 * (the backfill), so ids and timestamps of that data must match exactly and are kept. Values
 * each side generated itself (the id and times of a notification created during the run) can
 * only match in shape: a new id becomes `<new-id-N>` by order of first appearance on that side
 * (so the same request sequence yields the same placeholders on both sides, and a response that
 * points at the wrong entity still differs), a new time becomes `<time>`, and cursors are
 * compared by what they encode, normalised the same way.
 */
export class Normaliser {
  private readonly fresh = new Map<string, string>();

  constructor(private readonly known: ReadonlySet<string>) {}

  value(v: unknown, key?: string): unknown {
    if (Array.isArray(v)) return v.map((x) => this.value(x));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, this.value(x, k)]));
    if (typeof v !== 'string' || this.known.has(v)) return v;
    if (UUID.test(v)) {
      if (!this.fresh.has(v)) this.fresh.set(v, `<new-id-${this.fresh.size + 1}>`);
      return this.fresh.get(v);
    }
    if (ISO.test(v)) return '<time>';
    if (key === 'nextCursor') {
      const c = decodeCursor(v);
      if (c) return { cursor: [this.value(c.createdAt), this.value(c.id)] };
    }
    return v;
  }

  /** A fresh id seen in an earlier response, as the other side's equivalent can find it. */
  placeholderOf(id: string): string | undefined {
    return this.fresh.get(id);
  }

  idFor(placeholder: string): string | undefined {
    for (const [id, p] of this.fresh) if (p === placeholder) return id;
    return undefined;
  }
}

/** Every uuid and ISO time in `data` (the starting data both sides share). */
export function collectKnown(data: unknown, into = new Set<string>()): Set<string> {
  if (Array.isArray(data)) data.forEach((x) => collectKnown(x, into));
  else if (data instanceof Date) into.add(data.toISOString());
  else if (data && typeof data === 'object') Object.values(data).forEach((x) => collectKnown(x, into));
  else if (typeof data === 'string' && (UUID.test(data) || ISO.test(data))) into.add(data);
  return into;
}
