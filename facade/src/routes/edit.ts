import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import YAML, { isMap, isSeq, type Document } from 'yaml';
import { facadeErrors } from '../errors.ts';
import { parseRouteTable, parseTableText, type LoadedTable, type TableFormat } from './load.ts';
import type { RoutePatch } from './schema.ts';

export interface RouteEdit {
  /** The whole new table, validated. */
  loaded: LoadedTable;
  before: unknown;
  after: unknown;
}

/**
 * Applies a JSON merge patch (RFC 7396: objects merge, null removes) to one route of a table's
 * text and validates the result exactly like a file load. YAML is edited as a document, so
 * comments and layout elsewhere in the file survive.
 */
export function applyRoutePatch(text: string, format: TableFormat, routeId: string, patch: RoutePatch, source?: string): RouteEdit {
  let newText: string;
  let before: unknown;
  if (format === 'yaml') {
    const doc = YAML.parseDocument(text);
    const routes = doc.get('routes', true);
    const index = isSeq(routes) ? routes.items.findIndex((item) => isMap(item) && item.get('id') === routeId) : -1;
    if (index < 0) throw facadeErrors.ROUTE_NOT_FOUND(`No route with id "${routeId}" in the table; list them with "npm run strangler -- routes".`);
    before = (doc.getIn(['routes', index], true) as { toJSON(): unknown }).toJSON();
    mergeYaml(doc, ['routes', index], patch as Record<string, unknown>);
    newText = doc.toString();
  } else {
    const table = parseTableText(text, 'json', source) as { routes?: Array<Record<string, unknown>> };
    const route = table.routes?.find((r) => r?.id === routeId);
    if (!route) throw facadeErrors.ROUTE_NOT_FOUND(`No route with id "${routeId}" in the table; list them with "npm run strangler -- routes".`);
    before = structuredClone(route);
    mergePlain(route, patch as Record<string, unknown>);
    newText = `${JSON.stringify(table, null, 2)}\n`;
  }
  const loaded = parseRouteTable(newText, format, source);
  const after = (loaded.raw as { routes: Array<{ id: string }> }).routes.find((r) => r.id === routeId) ?? null;
  return { loaded, before, after };
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

/** Writes `text` to a temporary file in the same folder, flushes it, then renames it over `file`. */
export async function writeFileAtomic(file: string, text: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const handle = await open(tmp, 'w');
  try {
    await handle.writeFile(text, 'utf8');
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}
