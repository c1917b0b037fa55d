import { appendFile, open, readFile, stat } from 'node:fs/promises';
import { parseTableText, type LoadedTable, type TableFormat } from '../routes/load.ts';
import { writeFileAtomic } from '../routes/edit.ts';
import { stableStringify } from '../shadow/normalise.ts';

export type AuditSource = 'api' | 'file' | 'sighup';

/** One change to the route table: who, when, what before, what after, and why. */
export interface AuditEntry {
  at: string;
  who: string;
  source: AuditSource;
  /** The changed route, or null for a change to the upstreams or the default. */
  routeId: string | null;
  before: unknown;
  after: unknown;
  why: string;
  /** sha256 of the table text this change produced (ties the entry to the file content). */
  tableHash: string;
}

/**
 * The audit log: an append-only JSON-lines file. Each change appends its entries in one write
 * (O_APPEND), so concurrent writers (the facade, the CLI editing the file) do not interleave
 * lines. A writer that changes the table file records the entries after the new file is in place
 * (a failed write leaves no entry), while holding the file's write lock (routes/lock.ts); the
 * facade loads a changed file under the same lock and skips auditing when the last entry already
 * carries the new table's hash, so one change is never audited twice.
 */
export class AuditLog {
  constructor(readonly file: string) {}

  /** The table the newest entries were written for, kept next to the log: what catchUp diffs against. */
  get snapshotFile(): string {
    return `${this.file}.table`;
  }

  async append(entries: AuditEntry[]): Promise<void> {
    if (!entries.length) return;
    await appendFile(this.file, entries.map((e) => `${JSON.stringify(e)}\n`).join(''), { encoding: 'utf8', mode: 0o640 });
  }

  /** Appends the entries of a change that produced `table`, then keeps `table` as the snapshot. */
  async record(entries: AuditEntry[], table: Pick<LoadedTable, 'text' | 'hash' | 'format'>): Promise<void> {
    await this.append(entries);
    await this.keep(table);
  }

  /**
   * Audits what changed in the table file since the last audited table when nobody audited it:
   * edited while the facade was not running, or by hand just before `strangler flip --routes`
   * took the lock (the facade, finding the flip's hash last in the log, would skip it). Diffs
   * `table` against the snapshot every writer keeps (record); without one (a new log, or one
   * older than snapshots) it can only start one. Returns the entries written.
   */
  async catchUp(table: LoadedTable, who: string, why: string): Promise<number> {
    const snapshot = await this.snapshot();
    if (snapshot?.hash === table.hash) return 0;
    if (!snapshot || (await this.lastTableHash()) === table.hash) {
      await this.keep(table);
      return 0;
    }
    const at = new Date().toISOString();
    const changes = diffTables(parseTableText(snapshot.text, snapshot.format, this.snapshotFile), table.raw);
    await this.record(changes.map((c) => ({ at, who, source: 'file' as const, ...c, why, tableHash: table.hash })), table);
    return changes.length;
  }

  private async keep(table: Pick<LoadedTable, 'text' | 'hash' | 'format'>): Promise<void> {
    await writeFileAtomic(this.snapshotFile, `${JSON.stringify({ hash: table.hash, format: table.format, text: table.text })}\n`, 0o640);
  }

  private async snapshot(): Promise<{ hash: string; format: TableFormat; text: string } | null> {
    try {
      return JSON.parse(await readFile(this.snapshotFile, 'utf8')) as { hash: string; format: TableFormat; text: string };
    } catch {
      return null; // missing or torn: catchUp starts a new one
    }
  }

  /** Entries, newest first, optionally for one route. */
  async read({ routeId, limit = 100 }: { routeId?: string; limit?: number } = {}): Promise<AuditEntry[]> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: AuditEntry[] = [];
    const lines = text.split('\n');
    for (let i = lines.length - 1; i >= 0 && out.length < limit; i--) {
      const line = lines[i]!.trim();
      if (!line) continue;
      try {
        const entry = JSON.parse(line) as AuditEntry;
        if (!routeId || entry.routeId === routeId) out.push(entry);
      } catch {
        // a torn line (crash mid-write) is skipped, never fatal
      }
    }
    return out;
  }

  /** The table hash of the newest entry, or null. Reads only the end of the file. */
  async lastTableHash(): Promise<string | null> {
    let handle;
    try {
      handle = await open(this.file, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, 256 * 1024);
      const buf = Buffer.alloc(length);
      await handle.read(buf, 0, length, size - length);
      const lines = buf.toString('utf8').trimEnd().split('\n');
      for (let i = lines.length - 1; i >= 0; i--) {
        try {
          return (JSON.parse(lines[i]!) as AuditEntry).tableHash ?? null;
        } catch {
          continue;
        }
      }
      return null;
    } finally {
      await handle.close();
    }
  }
}

type RawTable = { upstreams?: unknown; default?: unknown; routes?: Array<{ id?: unknown }> } | null;

/** The changes between two tables as written: one per added, removed or changed route, one for upstreams/default. */
export function diffTables(before: unknown, after: unknown): Array<Pick<AuditEntry, 'routeId' | 'before' | 'after'>> {
  const a = (before ?? {}) as RawTable;
  const b = (after ?? {}) as RawTable;
  const out: Array<Pick<AuditEntry, 'routeId' | 'before' | 'after'>> = [];
  const byId = (t: RawTable) => new Map((t?.routes ?? []).filter((r) => typeof r?.id === 'string').map((r) => [r.id as string, r]));
  const ra = byId(a);
  const rb = byId(b);
  for (const [id, route] of ra) {
    const next = rb.get(id);
    if (!next) out.push({ routeId: id, before: route, after: null });
    else if (stableStringify(route) !== stableStringify(next)) out.push({ routeId: id, before: route, after: next });
  }
  for (const [id, route] of rb) if (!ra.has(id)) out.push({ routeId: id, before: null, after: route });
  const shared = (t: RawTable) => ({ upstreams: t?.upstreams ?? null, default: t?.default ?? null });
  if (stableStringify(shared(a)) !== stableStringify(shared(b))) out.push({ routeId: null, before: shared(a), after: shared(b) });
  return out;
}

/** Where the audit log of `routesFile` goes unless told otherwise: `routes.yaml` -> `routes.audit.jsonl`. */
export const defaultAuditFile = (routesFile: string): string => `${routesFile.replace(/\.(ya?ml|json)$/i, '')}.audit.jsonl`;

/** Who to name for a change found in the file: its owner, as far as the file tells. */
export async function fileOwner(file: string): Promise<string> {
  try {
    return `file-owner:uid=${(await stat(file)).uid}`;
  } catch {
    return 'unknown';
  }
}
