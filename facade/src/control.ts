import os from 'node:os';
import { readFile, realpath } from 'node:fs/promises';
import path from 'node:path';
import { AuditLog, defaultAuditFile, fileOwner } from './admin/audit.ts';
import { applyRoutePatch, writeFileAtomic } from './routes/edit.ts';
import { formatOf, parseRouteTable, RouteTableError, type LoadedTable } from './routes/load.ts';
import { withRouteFileLock } from './routes/lock.ts';
import type { RoutePatch } from './routes/schema.ts';
import type { RouteView } from './facade.ts';

/**
 * What the `strangler flip` and `strangler routes` commands do: talk to a running facade's admin
 * API, or edit/read the route file directly when no admin API runs. Usage problems throw
 * ControlUsageError (exit code 2 in the CLI), everything else a plain Error saying what to do.
 */
export class ControlUsageError extends Error {
  readonly code = 'EUSAGE';
}

export interface FlipArgs {
  serve?: string;
  shadow?: string;
  canary?: string;
  percent?: string;
  stickyBy?: string;
  offShadow?: boolean;
  offCanary?: boolean;
  /** JSON paths the shadow comparison leaves out (with `shadow`), e.g. ids the primary generates and cannot be asked twice for. */
  ignore?: string[];
}

/** Turns flip flags into a route merge patch. */
export function flipPatch(a: FlipArgs): RoutePatch {
  if (a.shadow && a.offShadow) throw new ControlUsageError('--shadow and --off-shadow contradict each other: give one.');
  if (a.canary && a.offCanary) throw new ControlUsageError('--canary and --off-canary contradict each other: give one.');
  if (a.shadow && a.canary && a.percent !== undefined) throw new ControlUsageError('--percent is ambiguous with both --shadow and --canary: change them in two flips.');
  const percent = a.percent === undefined ? undefined : Number(a.percent);
  if (percent !== undefined && (!Number.isFinite(percent) || percent < 0 || percent > 100)) throw new ControlUsageError(`--percent must be a number from 0 to 100, got "${a.percent}".`);
  if (a.percent !== undefined && !a.shadow && !a.canary) throw new ControlUsageError('--percent goes with --shadow <upstream> or --canary <upstream>.');
  if (a.stickyBy !== undefined && !a.canary) throw new ControlUsageError('--sticky-by goes with --canary <upstream>.');
  const ignore = (a.ignore ?? []).flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
  if (a.ignore?.length && !a.shadow) throw new ControlUsageError('--ignore goes with --shadow <upstream>.');
  const patch: RoutePatch = {};
  if (a.serve) patch.serve = a.serve;
  if (a.shadow) patch.shadow = { to: a.shadow, percent: percent ?? 100, ...(ignore.length ? { ignore } : {}) };
  if (a.offShadow) patch.shadow = null;
  if (a.canary) {
    if (percent === undefined) throw new ControlUsageError('--canary needs --percent N (the share of traffic, 0-100).');
    patch.canary = { to: a.canary, percent, ...(a.stickyBy ? { stickyBy: a.stickyBy } : {}) };
  }
  if (a.offCanary) patch.canary = null;
  if (!Object.keys(patch).length) throw new ControlUsageError('Nothing to flip: give --serve, --shadow, --canary, --off-shadow or --off-canary.');
  return patch;
}

export interface AdminTarget {
  /** Admin API base URL (default http://127.0.0.1:8081). */
  adminUrl: string;
  adminToken?: string;
}

export interface FlipResult {
  via: 'admin' | 'file';
  before: unknown;
  after: unknown;
  /** False when the route already was as asked: nothing was written or audited. */
  changed: boolean;
  /** What the flip changed besides what it named (a cut-over ends a shadow or canary to the new server). */
  implied: string[];
  /** False when the change is in effect but its audit entry could not be written. */
  audited: boolean;
  /** Why the audit entry could not be written. */
  auditError?: string;
}

export const defaultWho = () => `${os.userInfo().username}@${os.hostname()}`;

/**
 * Changes one route through the admin API, or in `routesFile` directly (audited next to it).
 *
 * With `routesFile`, a facade whose admin API is configured (a token) and reachable, and which
 * serves that same file, is asked to make the change: it applies it at once and serialises it
 * with its other changes. Otherwise the file is edited under its write lock (routes/lock.ts),
 * which the facade's own write-back takes too, so two writers never overwrite each other's
 * change: read, patch, validate, write atomically, then audit (a change that could not be
 * written is never audited; one that could not be audited is reported, and a running facade
 * then audits it as a file edit when it reloads).
 */
export async function flipRoute(o: { routeId: string; patch: RoutePatch; why: string; who?: string; routesFile?: string; auditFile?: string } & Partial<AdminTarget>): Promise<FlipResult> {
  const why = o.why?.trim();
  if (!why) throw new ControlUsageError('--why "<reason>" is required: it goes to the audit log.');
  if (why.length < 3) throw new ControlUsageError(`--why "${why}" is too short: say why in a few words (at least 3 characters); it goes to the audit log.`);
  const who = o.who ?? defaultWho();
  if (o.routesFile) {
    const file = path.resolve(o.routesFile);
    if (!(o.adminToken && o.adminUrl && (await adminServes(o as AdminTarget, file)))) return flipFile(file, o.auditFile, o.routeId, o.patch, who, o.why);
  }
  const body = await adminRequest<{ before: unknown; after: unknown; changed?: boolean; implied?: string[]; audited?: boolean }>(o as AdminTarget, 'PATCH', `/routes/${encodeURIComponent(o.routeId)}`, { ...o.patch, why: o.why, who });
  return { via: 'admin', before: body.before, after: body.after, changed: body.changed !== false, implied: body.implied ?? [], audited: body.audited !== false };
}

async function flipFile(file: string, auditFile: string | undefined, routeId: string, patch: RoutePatch, who: string, why: string): Promise<FlipResult> {
  return withRouteFileLock(file, async () => {
    const text = await readFile(file, 'utf8');
    const audit = new AuditLog(auditFile ?? defaultAuditFile(file));
    // A hand edit the facade has not loaded yet would be audited by nobody once this flip's
    // entry, with the new file's hash, is the newest: audit it first, as the facade would.
    let found: LoadedTable;
    try {
      found = parseRouteTable(text, formatOf(file), file);
    } catch (err) {
      if (err instanceof RouteTableError) throw new ControlUsageError(`${file} is not a valid route table, so no flip can be applied to it; nothing was changed. Fix it first:\n${err.problems.map((p) => `  - ${p}`).join('\n')}`);
      throw err;
    }
    let caughtUp: string | undefined;
    await audit.catchUp(found, await fileOwner(file), 'route file edited by hand (found by strangler flip)').catch((err: Error) => void (caughtUp = err.message));
    let edit;
    try {
      edit = applyRoutePatch(text, formatOf(file), routeId, patch, file);
    } catch (err) {
      if (err instanceof RouteTableError) throw new ControlUsageError(`That flip would make ${file} invalid; nothing was changed:\n${err.problems.map((p) => `  - ${p}`).join('\n')}`);
      // No such route: the caller's to fix, as through the admin API.
      if ((err as { code?: unknown }).code === 'ROUTE_NOT_FOUND') throw new ControlUsageError((err as Error).message);
      throw err;
    }
    const result = { via: 'file' as const, before: edit.before, after: edit.after, changed: edit.changed, implied: edit.implied };
    const caughtUpError = caughtUp ? `${audit.file}: an earlier hand edit could not be audited: ${caughtUp}` : undefined;
    if (!edit.changed) return caughtUpError ? { ...result, audited: false, auditError: caughtUpError } : { ...result, audited: true };
    await writeFileAtomic(file, edit.loaded.text);
    try {
      await audit.record([{ at: new Date().toISOString(), who, source: 'file', routeId, before: edit.before, after: edit.after, why, tableHash: edit.loaded.hash }], edit.loaded);
      return caughtUpError ? { ...result, audited: false, auditError: caughtUpError } : { ...result, audited: true };
    } catch (err) {
      return { ...result, audited: false, auditError: `${audit.file}: ${(err as Error).message}` };
    }
  });
}

/** Whether a facade answers on the admin API and serves `file` (a short probe: any failure means no). */
async function adminServes(target: AdminTarget, file: string): Promise<boolean> {
  try {
    const served = (await adminRequest<{ file: string | null }>(target, 'GET', '/routes', undefined, 2_000)).file;
    if (!served) return false;
    const real = (p: string) => realpath(p).catch(() => path.resolve(p));
    return (await real(served)) === (await real(file));
  } catch (err) {
    // A token the facade refuses is a mistake to report, not a reason to edit the file behind its back.
    const status = (err as { status?: unknown }).status;
    if (status === 401 || status === 403) {
      throw new ControlUsageError(`The admin API at ${target.adminUrl} refused STRANGLER_ADMIN_TOKEN (${status}), so it could not be asked whether it serves ${file}: set the token the facade runs with, or unset STRANGLER_ADMIN_TOKEN to edit the file directly.`);
    }
    return false;
  }
}

/** Routes with live stats from the admin API. */
export async function fetchRoutes(target: AdminTarget): Promise<RouteView[]> {
  return (await adminRequest<{ routes: RouteView[] }>(target, 'GET', '/routes')).routes;
}

/** Routes as the file declares them (no live stats). */
export async function readRoutesFile(file: string): Promise<RouteView[]> {
  const { spec } = parseRouteTable(await readFile(file, 'utf8'), formatOf(file), file);
  const empty = { requests: 0, errors: 0, p50Ms: null, p99Ms: null, canaryShare: null };
  return spec.routes.map((r) => ({ id: r.id, match: r.match, effects: r.effects, serve: r.serve, shadow: r.shadow ?? null, canary: r.canary ?? null, stats: empty, shadowStats: null, breakers: {} }));
}

async function adminRequest<T>(target: AdminTarget, method: string, pathname: string, body?: unknown, timeoutMs = 10_000): Promise<T> {
  if (!target.adminToken) throw new ControlUsageError('Set STRANGLER_ADMIN_TOKEN to talk to the admin API, or pass --routes <file> to work on the route file directly.');
  const url = new URL(pathname, target.adminUrl.endsWith('/') ? target.adminUrl : `${target.adminUrl}/`);
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${target.adminToken}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    throw new Error(`cannot reach the admin API at ${target.adminUrl} (${(err as Error).cause ? String((err as { cause: { code?: string } }).cause.code ?? (err as Error).message) : (err as Error).message}): is the facade running with STRANGLER_ADMIN_TOKEN set? Or pass --routes <file> to edit the file directly.`);
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  if (!res.ok) {
    const e = (json as { error?: { code?: string; message?: string; details?: unknown } } | null)?.error;
    const details = Array.isArray(e?.details) ? `\n${e.details.map((d) => `  - ${typeof d === 'string' ? d : `${(d as { field?: string }).field}: ${(d as { problem?: string }).problem}`}`).join('\n')}` : '';
    const message = `admin API answered ${res.status} ${e?.code ?? ''}: ${e?.message ?? text}${details}`;
    // A change the facade refused as invalid is the caller's to fix, like bad flags.
    if (e?.code === 'ROUTE_TABLE_INVALID' || e?.code === 'VALIDATION_FAILED' || e?.code === 'ROUTE_NOT_FOUND') throw new ControlUsageError(message);
    throw Object.assign(new Error(message), { status: res.status });
  }
  return json as T;
}

/**
 * A plain-text table of routes and their live stats, for the terminal. `live: false` (routes read
 * from the file) leaves the stats out: there are none, and zeros would look like an idle facade.
 */
export function formatRoutes(routes: RouteView[], { live = true } = {}): string {
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : `${(v * 100).toFixed(1)}%`);
  const ms = (v: number | null) => (v === null ? '-' : `${v}ms`);
  const rows = routes.map((r) => {
    const shadow = r.shadow as { to: string; percent: number } | null;
    const canary = r.canary as { to: string; percent: number } | null;
    const breakers = Object.entries(r.breakers)
      .filter(([, s]) => s !== 'closed')
      .map(([n, s]) => `${n}:${s}`)
      .join(' ');
    return [
      r.id,
      `${r.match.method} ${r.match.path}`,
      r.effects,
      r.serve,
      canary ? `${canary.to} ${canary.percent}%${live ? ` (now ${pct(r.stats.canaryShare)})` : ''}` : '-',
      shadow ? `${shadow.to} ${shadow.percent}%${live ? ` (mismatch ${pct(r.shadowStats?.mismatchRate)})` : ''}` : '-',
      ...(live ? [String(r.stats.requests), String(r.stats.errors), `${ms(r.stats.p50Ms)}/${ms(r.stats.p99Ms)}`, breakers || 'closed'] : []),
    ];
  });
  const header = ['ROUTE', 'MATCH', 'EFFECTS', 'SERVE', 'CANARY', 'SHADOW', ...(live ? ['REQS', '5XX', 'P50/P99', 'BREAKERS'] : [])];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}
