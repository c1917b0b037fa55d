import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { open, realpath, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import YAML, { isMap, isSeq, type Document } from 'yaml';
import { facadeErrors } from '../errors.ts';
import { parseRouteTable, parseTableText, type LoadedTable, type TableFormat } from './load.ts';
import type { RoutePatch } from './schema.ts';

export interface RouteEdit {
  /** The whole new table, validated. */
  loaded: LoadedTable;
  before: unknown;
  after: unknown;
  /** False when the patch leaves the route as it was: nothing to write or audit. */
  changed: boolean;
  /** What the patch changed besides what it named (see promote). */
  implied: string[];
}

/**
 * Cutting over: `serve: X` on a route that shadows or canaries to X also ends that shadow or
 * canary (a route cannot shadow or canary to the upstream that serves it), unless the patch
 * says otherwise.
 */
function promote(before: Record<string, unknown>, patch: RoutePatch): { patch: RoutePatch; implied: string[] } {
  const serve = (patch as { serve?: unknown }).serve;
  if (typeof serve !== 'string') return { patch, implied: [] };
  const out: Record<string, unknown> = { ...patch };
  const implied: string[] = [];
  for (const key of ['shadow', 'canary'] as const) {
    const current = before[key] as { to?: unknown } | undefined;
    if (out[key] === undefined && current?.to === serve) {
      out[key] = null;
      implied.push(`${key} to ${serve} ended: it now serves the route`);
    }
  }
  return { patch: out as RoutePatch, implied };
}

/**
 * Applies a JSON merge patch (RFC 7396: objects merge, null removes) to one route of a table's
 * text and validates the result exactly like a file load. YAML is edited as a document, so
 * comments and layout elsewhere in the file survive.
 */
export function applyRoutePatch(text: string, format: TableFormat, routeId: string, patch: RoutePatch, source?: string): RouteEdit {
  let newText: string;
  let before: unknown;
  let implied: string[] = [];
  if (format === 'yaml') {
    const doc = YAML.parseDocument(text);
    const routes = doc.get('routes', true);
    const index = isSeq(routes) ? routes.items.findIndex((item) => isMap(item) && item.get('id') === routeId) : -1;
    if (index < 0) throw facadeErrors.ROUTE_NOT_FOUND(`No route with id "${routeId}" in the table; list them with "npm run strangler -- routes".`);
    before = (doc.getIn(['routes', index], true) as { toJSON(): unknown }).toJSON();
    ({ patch, implied } = promote(before as Record<string, unknown>, patch));
    mergeYaml(doc, ['routes', index], patch as Record<string, unknown>);
    newText = doc.toString();
  } else {
    const table = parseTableText(text, 'json', source) as { routes?: Array<Record<string, unknown>> };
    const route = table.routes?.find((r) => r?.id === routeId);
    if (!route) throw facadeErrors.ROUTE_NOT_FOUND(`No route with id "${routeId}" in the table; list them with "npm run strangler -- routes".`);
    before = structuredClone(route);
    ({ patch, implied } = promote(route, patch));
    mergePlain(route, patch as Record<string, unknown>);
    newText = `${JSON.stringify(table, null, 2)}\n`;
  }
  const loaded = parseRouteTable(newText, format, source);
  const after = (loaded.raw as { routes: Array<{ id: string }> }).routes.find((r) => r.id === routeId) ?? null;
  return { loaded, before, after, changed: !isDeepStrictEqual(before, after), implied };
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function mergeYaml(doc: Document, at: Array<string | number>, patch: Record<string, unknown>) {
  for (const [key, value] of Object.entries(patch)) {
    if (value === undefined) continue;
    const p = [...at, key];
    if (value === null) doc.deleteIn(p);
    else if (isPlainObject(value) && isMap(doc.getIn(p, true))) mergeYaml(doc, p, value);
    else doc.setIn(p, doc.createNode(isPlainObject(value) ? stripNulls(value) : value, { flow: isPlainObject(value) }));
  }
}

function mergePlain(target: Record<string, unknown>, patch: Record<string, unknown>) {
  for (const [key, value] of Object.entries(patch)) {
    if (value === undefined) continue;
    if (value === null) delete target[key];
    else if (isPlainObject(value) && isPlainObject(target[key])) mergePlain(target[key] as Record<string, unknown>, value);
    else target[key] = isPlainObject(value) ? stripNulls(value) : value;
  }
}

function stripNulls(v: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null && x !== undefined));
}

/**
 * Replaces the file at `given` with `text` atomically: a temporary file in the same folder, with
 * the mode (and, when this process may set them, the owner and group) of the file it replaces,
 * written and fsynced, renamed over it, then the folder fsynced so the rename itself survives a
 * crash.
 * Readers see the old content or the new, never a mix; a failure leaves the old file untouched.
 */
export async function writeFileAtomic(given: string, text: string, newFileMode = 0o644): Promise<void> {
  // Through a symbolic link, the file it resolves to is the one replaced: renaming over the link
  // itself would turn it into a plain file, cut off from what the link pointed at.
  const file = await realpath(given).catch(() => given);
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let existing: Stats | null = null;
  try {
    existing = await stat(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const handle = await open(tmp, 'wx', existing ? existing.mode & 0o7777 : newFileMode);
  try {
    try {
      await handle.writeFile(text, 'utf8');
      if (existing) {
        if (existing.uid !== process.getuid?.() || existing.gid !== process.getgid?.()) {
          // Only root (or the owner, for a group it belongs to) may; otherwise the file becomes ours.
          await handle.chown(existing.uid, existing.gid).catch(() => {});
        }
        await handle.chmod(existing.mode & 0o7777); // open() applied the umask
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await syncDir(dir);
}

async function syncDir(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch (err) {
    // Some platforms and file systems cannot fsync a folder (EISDIR, EINVAL, EPERM on Windows).
    if (!['EISDIR', 'EINVAL', 'EPERM', 'EACCES'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
  } finally {
    await handle?.close();
  }
}
