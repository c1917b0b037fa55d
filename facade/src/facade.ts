import { EventEmitter } from 'node:events';
import { ServerResponse, type IncomingMessage, type RequestListener } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import path from 'node:path';
import { createLogger, createRegistry, startSpan, tracingEnabled, type AppError, type Logger, type Registry, type SpanHandle } from '@strangler/platform';
import { AuditLog, defaultAuditFile, diffTables, fileOwner, type AuditSource } from './admin/audit.ts';
import { tokenChecker } from './admin/token.ts';
import { hasBody, readBodyBounded } from './body.ts';
import { CLIENT_GONE, DEFAULT_BREAKER, breakerState, type BreakerSettings, type BreakerState } from './breakers.ts';
import { facadeErrors } from './errors.ts';
import { cleanRequestHeaders } from './headers.ts';
import { createFacadeMetrics, type FacadeMetrics } from './metrics.ts';
import { ATTEMPT, abortAttempt, answerSocket, failAttempt, newAttempt, type Attempt } from './proxy.ts';
import { decide, type Decision } from './router.ts';
import { applyRoutePatch, writeFileAtomic } from './routes/edit.ts';
import { withRouteFileLock } from './routes/lock.ts';
import { formatOf, loadRouteTableFile, parseRouteTable, RouteTableError, type LoadedTable, type TableFormat } from './routes/load.ts';
import type { RoutePatch } from './routes/schema.ts';
import { compileTable, type CompiledRoute, type RouteTable } from './routes/table.ts';
import { watchFile } from './routes/watch.ts';
import { ShadowMirror, type ShadowRun } from './shadow/mirror.ts';
import { NoiseLearner } from './shadow/noise.ts';
import { ShadowRecorder } from './shadow/recorder.ts';
import { UpstreamRegistry, type UpstreamRuntime } from './upstreams.ts';

export interface FacadeOptions {
  /** The route table file (.yaml, .yml or .json); watched for changes unless `watch` is false. */
  routesFile?: string;
  /** The route table as text instead of a file (embedding, tests); admin changes then stay in memory. */
  routesText?: string;
  /** Format of `routesText` (default yaml). */
  routesFormat?: TableFormat;
  /** Reload when the file changes (default true when `routesFile` is given). SIGHUP is wired by main.ts. */
  watch?: boolean;
  /** Enables the admin API and the admin-only `x-strangler-side` header; unset, both are off. */
  adminToken?: string;
  /** Audit log (JSON lines). Default: `<routes file>.audit.jsonl` next to the table file; none for `routesText`. */
  auditFile?: string;
  logger?: Logger;
  /** Metrics registry (default: a new one with process metrics). */
  registry?: Registry;
  /** Breaker defaults for upstreams that do not set their own (timeoutMs is the time to response headers). */
  breaker?: Partial<BreakerSettings>;
  /** Largest request body buffered so a failed request can be sent to the fallback (default 1 MiB). Larger bodies stream and are never replayed. */
  replayBodyBytes?: number;
  shadow?: {
    /** Shadow runs in flight at once (default 64); beyond it requests are not mirrored. */
    maxInFlight?: number;
    /** Largest request/response body copied and compared (default 1 MiB). */
    maxBodyBytes?: number;
    /** Comparisons per route always sampled for noise learning at first (default 20). */
    noiseWarmUp?: number;
    /** Mismatches kept for the admin API (default 1000). */
    keepMismatches?: number;
  };
  /** Debounce of file-change events in ms (default 100). */
  watchDebounceMs?: number;
}

export type ReloadResult =
  | { status: 'applied'; generation: number; changes: number }
  | { status: 'unchanged'; generation: number }
  | { status: 'invalid'; generation: number; problems: string[] };

export interface ChangeMeta {
  who: string;
  why: string;
}

export interface RouteStats {
  requests: number;
  errors: number;
  p50Ms: number | null;
  p99Ms: number | null;
  canaryShare: number | null;
}

export interface RouteView {
  id: string;
  match: { method: string; path: string };
  effects: string;
  serve: string;
  shadow: unknown;
  canary: unknown;
  stats: RouteStats;
  shadowStats: (ReturnType<ShadowRecorder['stats']> & { noise: string[] }) | null;
  breakers: Record<string, BreakerState>;
}

/**
 * The request's path and query, with `req.url` set to it: an absolute-form target
 * ("GET http://host/api/x", as clients configured to use the facade as an HTTP proxy send) is
 * routed by its path like any other, not by the default route. Null for a target that is
 * neither (`*`, an authority, garbage).
 */
function originForm(req: IncomingMessage): string | null {
  const url = req.url ?? '/';
  if (url.startsWith('/')) return url;
  if (!/^https?:\/\//i.test(url)) return null;
  try {
    const parsed = new URL(url);
    req.url = `${parsed.pathname}${parsed.search}`;
    return req.url;
  } catch {
    return null;
  }
}

/** Answers a request the facade will not forward (400), closing the connection: what follows on it cannot be trusted. */
function refuse(res: ServerResponse, err: AppError): void {
  const body = JSON.stringify(err.toJSON());
  res.writeHead(err.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
  res.end(body);
}

/** Reserved path prefix on the client port (healthz, readyz): never proxied. */
export const RESERVED_PREFIX = '/__strangler/';
const DEFAULT_ROUTE = '(default)';
const EMPTY = Buffer.alloc(0);
const REFUSED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

type FailureKind = 'status' | 'client-gone' | 'circuit-open' | 'timeout' | 'refused' | 'reset';

function classify(err: unknown): FailureKind {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'EUPSTREAM_STATUS') return 'status';
  if (code === 'ECLIENTGONE') return 'client-gone';
  if (code === 'EOPENBREAKER' || code === 'ESEMLOCKED' || code === 'ESHUTDOWN') return 'circuit-open';
  if (code === 'ETIMEDOUT' || code === 'ESOCKETTIMEDOUT') return 'timeout';
  if (typeof code === 'string' && REFUSED.has(code)) return 'refused';
  return 'reset';
}

/** Per-request state, one object per client request. */
interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
  table: RouteTable;
  route: CompiledRoute | null;
  decision: Decision;
  requestId: string;
  strip: string[] | null;
  started: number;
  attempt: Attempt | null;
  answeredBy: string;
  side: string;
}

/**
 * The routing facade: a node:http request listener (and upgrade listener) in front of any HTTP
 * application, driven by a route table.
 *
 * Invariants: a request reads the current table once and finishes on it, whatever reloads
 * happen meanwhile; a table is swapped only after it validated completely (an invalid file is
 * refused, logged, counted, and the last good table keeps serving); a request that may have
 * reached an upstream is sent elsewhere only when its route is `read` or `idempotent`, and a
 * body is buffered (bounded) only when a fallback or a shadow may need it again; the client's
 * response is always the answering upstream's, streamed, or a coded JSON error (502 refused or
 * reset, 504 timeout, 503 open breaker). Table changes (file, SIGHUP, admin API) are serialised
 * and each is audited once.
 *
 * Events (namespaced, for logs and metrics): facade:reload, facade:reload:invalid,
 * facade:upstream:failure, facade:fallback, facade:breaker:{open,half-open,close},
 * facade:shadow:{result,mismatch,noise,error}.
 */
export interface Facade extends EventEmitter {
  /** The client-facing request listener. */
  readonly handler: RequestListener;
  /** The client-facing `upgrade` listener (WebSocket). */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  readonly metrics: FacadeMetrics;
  readonly logger: Logger;
  readonly routesFile: string | null;
  readonly audit: AuditLog | null;
  readonly adminEnabled: boolean;
  /** Constant-time check of an admin token (always false when no token is configured). */
  checkAdminToken(token: string | undefined | null): boolean;
  table(): RouteTable;
  /** Re-reads the route file; refuses an invalid one and keeps the current table. */
  reload(opts?: { source?: AuditSource; who?: string; why?: string }): Promise<ReloadResult>;
  /**
   * Applies a merge patch to one route, validated like the file, written back atomically (under
   * the file's write lock), then applied and audited. `audited` is false when the change is in
   * effect but the audit log could not be written (logged as an error). `changed` is false when
   * the route already was as asked (nothing written or audited); `implied` lists what a cut-over
   * ended besides (routes/edit.ts, promote).
   */
  changeRoute(routeId: string, patch: RoutePatch, meta: ChangeMeta): Promise<{ before: unknown; after: unknown; changed: boolean; implied: string[]; generation: number; audited: boolean }>;
  routes(): Promise<RouteView[]>;
  mismatches(opts?: { routeId?: string; limit?: number }): ReturnType<ShadowRecorder['list']>;
  /** False once the facade is stopping (readiness). */
  isReady(): boolean;
  /** Marks the facade as stopping: /__strangler/readyz answers 503 so balancers stop sending. */
  markStopping(): void;
  /**
   * Closes the proxied WebSocket connections still open: the server's close waits for them, and
   * a WebSocket may never end by itself (server.ts calls it when the shutdown grace is over).
   */
  closeUpgraded(): void;
  /** Stops watching, waits (bounded) for shadow runs, closes upstream sockets and breakers. */
  close(): Promise<void>;
}

export async function createFacade(options: FacadeOptions): Promise<Facade> {
  const logger = options.logger ?? createLogger('facade');
  const registry = options.registry ?? createRegistry({ service: 'facade' });
  const events = new EventEmitter() as Facade;
  const upstreams = new UpstreamRegistry({ ...DEFAULT_BREAKER, ...options.breaker }, events);
  const stateValue = { closed: 0, 'half-open': 1, open: 2 } as const;
  const recorder = new ShadowRecorder(options.shadow?.keepMismatches ?? 1_000);
  const metrics = createFacadeMetrics(registry, {
    breakerStates: () => upstreams.current().map((u) => [u.name, stateValue[breakerState(u.breaker)]]),
    shadowCounts: () => recorder.routes().map((r) => [r, recorder.stats(r)]),
  });
  const noise = new NoiseLearner(options.shadow?.noiseWarmUp ?? 20);
  const mirror = new ShadowMirror({
    recorder,
    noise,
    events,
    maxInFlight: options.shadow?.maxInFlight ?? 64,
    maxBodyBytes: options.shadow?.maxBodyBytes ?? 1024 * 1024,
  });
  const replayLimit = options.replayBodyBytes ?? 1024 * 1024;
  const routesFile = options.routesFile ? path.resolve(options.routesFile) : null;
  const auditFile = options.auditFile ?? (routesFile ? defaultAuditFile(routesFile) : null);
  const audit = auditFile ? new AuditLog(auditFile) : null;
  const checkToken = options.adminToken ? tokenChecker(options.adminToken) : () => false;

  let loaded: LoadedTable;
  if (routesFile) {
    // Loaded under the file's lock, as every later load is, and its changes made while no
    // facade ran audited under it too: a flip --routes running now would otherwise audit them as well.
    const file = routesFile;
    loaded = await withRouteFileLock(
      file,
      async () => {
        const table = await loadRouteTableFile(file);
        await audit?.catchUp(table, await fileOwner(file), 'route file changed while the facade was not running').catch((err: unknown) => {
          logger.error({ err, audit: audit.file }, 'could not audit the changes made to the route file while the facade was not running');
        });
        return table;
      },
      { waitMs: 5_000, onTimeout: 'proceed' },
    );
  } else if (options.routesText !== undefined) loaded = parseRouteTable(options.routesText, options.routesFormat ?? 'yaml', 'routesText');
  else throw new Error('createFacade needs routesFile or routesText');
  let generation = 1;
  let current = compileTable(loaded, upstreams, generation);
  metrics.reloads.labels('start', 'applied').inc();
  metrics.generation.set(generation);
  let closing = false;

  wireObservability(events, metrics, logger);

  // Table changes run one at a time (file events, SIGHUP and API calls may race).
  let lock: Promise<unknown> = Promise.resolve();
  const serialised = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = lock.then(fn, fn);
    lock = run.catch(() => {});
    return run;
  };

  /**
   * Swaps in a table that is already in effect on disk (or, without a file, in memory), then
   * audits its changes: after the fact, so the log never records a change that did not happen.
   * A change some other writer (the CLI) already audited is not audited again.
   */
  async function swap(next: LoadedTable, source: AuditSource, who: string, why: string): Promise<{ changes: number; audited: boolean }> {
    const previous = current;
    current = compileTable(next, upstreams, ++generation);
    previous.lease.retire();
    metrics.generation.set(generation);
    const changes = diffTables(previous.source.raw, next.raw);
    let audited = true;
    try {
      if (audit) {
        const at = new Date().toISOString();
        const entries = changes.length && (await audit.lastTableHash()) !== next.hash ? changes.map((c) => ({ at, who, source, ...c, why, tableHash: next.hash })) : [];
        await audit.record(entries, next);
      }
    } catch (err) {
      // The change is in effect, so the new table serves; the missing entry must be loud.
      audited = false;
      logger.error({ err, audit: audit?.file, source, changes: changes.map((c) => c.routeId) }, 'could not write the audit log for a route table change');
    }
    events.emit('facade:reload', { generation, source, who, why, changes: changes.map((c) => c.routeId ?? '(upstreams/default)') });
    return { changes: changes.length, audited };
  }

  /** Loads the route file and swaps it in if it changed (callers hold the lock). */
  async function loadFromDisk(source: AuditSource, who?: string, why?: string): Promise<ReloadResult> {
    if (!routesFile) return { status: 'unchanged', generation };
    let next: LoadedTable;
    try {
      next = await loadRouteTableFile(routesFile);
    } catch (err) {
      const problems = err instanceof RouteTableError ? err.problems : [(err as Error).message];
      metrics.reloads.labels(source, 'invalid').inc();
      events.emit('facade:reload:invalid', { source, file: routesFile, problems });
      return { status: 'invalid', generation, problems };
    }
    if (next.hash === current.source.hash) {
      metrics.reloads.labels(source, 'unchanged').inc();
      return { status: 'unchanged', generation };
    }
    const editor = who ?? (await fileOwner(routesFile));
    const { changes } = await swap(next, source, editor, why ?? (source === 'sighup' ? 'reloaded on SIGHUP' : 'route file changed on disk'));
    metrics.reloads.labels(source, 'applied').inc();
    return { status: 'applied', generation, changes };
  }

  // Loading takes the file's write lock (routes/lock.ts), so a change another writer (the CLI) is
  // making is read only once that writer has audited it; it gives up waiting rather than not load.
  const reload: Facade['reload'] = ({ source = 'file', who, why } = {}) =>
    serialised(() => (routesFile ? withRouteFileLock(routesFile, () => loadFromDisk(source, who, why), { waitMs: 5_000, onTimeout: 'proceed' }) : loadFromDisk(source, who, why)));

  const changeRoute: Facade['changeRoute'] = (routeId, patch, meta) =>
    serialised(async () => {
      if (!routesFile) return applyChange(routeId, patch, meta);
      try {
        return await withRouteFileLock(routesFile, () => applyChange(routeId, patch, meta));
      } catch (err) {
        if ((err as { code?: unknown }).code === 'EROUTELOCKED') throw facadeErrors.ROUTE_FILE_LOCKED(`${(err as Error).message} Nothing was changed.`, { file: routesFile });
        throw err;
      }
    });

  /** One API change: read-modify-write of the file under its lock, then swap and audit (callers hold both locks). */
  async function applyChange(routeId: string, patch: RoutePatch, meta: ChangeMeta) {
    // An edit on disk not loaded yet (the watcher debounces; another writer just released the
    // lock) is taken in first, so it is neither lost nor blamed on this change.
    if (routesFile) {
      const pending = await loadFromDisk('file');
      if (pending.status === 'invalid') {
        throw facadeErrors.ROUTE_TABLE_CONFLICT(`The route file on disk is invalid; fix it before changing routes through the API: ${pending.problems.join('; ')}`);
      }
    }
    const src = current.source;
    const edit = applyRoutePatch(src.text, src.format, routeId, patch, routesFile ?? 'route table');
    // Nothing to write, swap or audit.
    if (!edit.changed) return { before: edit.before, after: edit.after, changed: false, implied: edit.implied, generation, audited: true };
    // The file first, then the table and the audit log: nothing is applied or audited unless it
    // is on disk. The watcher's reload waits for the locks and then finds the table unchanged.
    if (routesFile) {
      try {
        await writeFileAtomic(routesFile, edit.loaded.text);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
        throw facadeErrors.ROUTE_FILE_WRITE_FAILED(
          `The route file could not be written (${code}); nothing was changed. Make ${path.dirname(routesFile)} writable by the facade, or change the file where it is managed.`,
          { file: routesFile, code },
          { cause: err },
        );
      }
    }
    const { audited } = await swap(edit.loaded, 'api', meta.who, meta.why);
    metrics.reloads.labels('api', 'applied').inc();
    return { before: edit.before, after: edit.after, changed: true, implied: edit.implied, generation, audited };
  }

  const stopWatching =
    routesFile && options.watch !== false
      ? watchFile(routesFile, () => void reload({ source: 'file' }).catch((err) => logger.error({ err, file: routesFile }, 'route file reload failed')), {
          debounceMs: options.watchDebounceMs ?? 100,
          onError: (err) => logger.error({ err, file: routesFile }, 'route file watch failed; reload with SIGHUP'),
        })
      : () => {};

  function respondError(x: Exchange, kind: FailureKind, upstream: string) {
    const { res } = x;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const details = { upstream, route: x.route?.id ?? null, requestId: x.requestId };
    const err =
      kind === 'timeout'
        ? facadeErrors.UPSTREAM_TIMEOUT(undefined, details)
        : kind === 'circuit-open'
          ? facadeErrors.UPSTREAM_CIRCUIT_OPEN(undefined, details)
          : kind === 'refused'
            ? facadeErrors.UPSTREAM_UNREACHABLE(undefined, details)
            : facadeErrors.UPSTREAM_CONNECTION_LOST(undefined, details);
    const body = JSON.stringify(err.toJSON());
    res.writeHead(err.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'x-request-id': x.requestId });
    res.end(body);
  }

  /** May the request go to the fallback after `kind` on `attempt`? */
  function mayReplay(x: Exchange, kind: FailureKind, attempt: Attempt, body: Buffer | null): boolean {
    const neverReached = kind === 'circuit-open' || !attempt.reached;
    const effects = x.route?.effects ?? 'unsafe';
    if (!neverReached && effects === 'unsafe') return false;
    // A streamed body was consumed by the first attempt, unless the breaker rejected before sending.
    return body !== null || kind === 'circuit-open';
  }

  async function dispatch(x: Exchange): Promise<void> {
    const { req, res, decision } = x;
    let body: Buffer | null = EMPTY;
    if (hasBody(req)) {
      if (decision.fallback || decision.shadow) {
        try {
          body = await readBodyBounded(req, replayLimit);
        } catch {
          return; // the client went away mid-body
        }
      } else body = null;
    }
    let shadow: ShadowRun | null = decision.shadow && x.route?.shadow ? mirror.start(x.route.shadow, req, body, x.requestId, x.strip, x.table.lease) : null;
    let upstream: UpstreamRuntime = decision.upstream;
    let fellBack = false;
    for (;;) {
      const run = shadow;
      const attempt = newAttempt(upstream.name, x.requestId, x.strip, body && body.length ? body : null, run ? (proxyRes) => run.capturePrimary(proxyRes) : null);
      x.attempt = attempt;
      x.answeredBy = upstream.name;
      const target = upstream;
      try {
        await target.breaker.fire(() => target.proxy.forward(req, res, attempt));
        return;
      } catch (err) {
        const kind = classify(err);
        if (kind === 'status') {
          const status = (err as { status: number }).status;
          if (status >= 500) metrics.upstreamFailures.labels(target.name, 'status-5xx').inc();
          return;
        }
        shadow?.primaryFailed();
        shadow = null;
        if (kind === 'client-gone') return;
        metrics.upstreamFailures.labels(target.name, kind).inc();
        events.emit('facade:upstream:failure', { upstream: target.name, route: x.route?.id ?? null, kind, reached: attempt.reached, requestId: x.requestId });
        const fallback = decision.fallback;
        if (!fellBack && fallback && !res.headersSent && mayReplay(x, kind, attempt, body)) {
          metrics.fallbacks.labels(x.route?.id ?? DEFAULT_ROUTE, target.name, fallback.name, kind).inc();
          events.emit('facade:fallback', { route: x.route?.id, from: target.name, to: fallback.name, kind, requestId: x.requestId });
          upstream = fallback;
          fellBack = true;
          x.side = 'fallback';
          continue;
        }
        respondError(x, kind, target.name);
        return;
      }
    }
  }

  // Proxied WebSocket connections, until they close (closeUpgraded).
  const upgraded = new Set<Duplex>();

  const handler: RequestListener = (req, res) => {
    const url = originForm(req);
    if (url === null) {
      // `OPTIONS *` asks the server itself; any other target that is not a path is refused
      // here: the proxy would not forward it, and its failure would count against a breaker.
      if (req.url === '*' && req.method === 'OPTIONS') res.writeHead(204, { 'content-length': 0 }).end();
      else refuse(res, facadeErrors.BAD_REQUEST_TARGET(`"${String(req.url).slice(0, 200)}" is not a path or an absolute http(s) URL.`));
      return;
    }
    if (url.startsWith(RESERVED_PREFIX)) {
      internal(req, res, url);
      return;
    }
    const table = current;
    const cleaned = cleanRequestHeaders(req);
    if (cleaned.refuse) {
      refuse(res, facadeErrors.BAD_REQUEST_HEADERS(`Refused: ${cleaned.refuse}.`));
      return;
    }
    const route = table.matcher.match(req.method ?? 'GET', url);
    const forced = cleaned.forceSide && checkToken(cleaned.adminToken) && (cleaned.forceSide === 'serve' || cleaned.forceSide === 'canary') ? cleaned.forceSide : undefined;
    const decision = decide(table, route, req, forced);
    const x: Exchange = {
      req,
      res,
      table,
      route,
      decision,
      requestId: cleaned.requestId,
      strip: cleaned.strip,
      started: performance.now(),
      attempt: null,
      answeredBy: decision.upstream.name,
      side: decision.side,
    };
    const span = tracingEnabled() ? facadeSpan(x) : null;
    metrics.started();
    table.lease.hold();
    // `on`, not `once`: a response emits 'close' once, and once() costs a bound wrapper per request.
    // The flag keeps the lease count right should it ever be emitted twice.
    let closed = false;
    res.on('close', () => {
      if (closed) return;
      closed = true;
      table.lease.release();
      const finished = res.writableFinished;
      const a = x.attempt;
      if (!finished && a && !a.settled) {
        failAttempt(a, CLIENT_GONE);
        abortAttempt(a);
      }
      metrics.observe(x.route?.id ?? DEFAULT_ROUTE, x.answeredBy, x.side, finished ? res.statusCode : 499, (performance.now() - x.started) / 1000);
      if (span) {
        const status = finished ? res.statusCode : 499;
        span.setAttributes({ 'http.response.status_code': status, 'strangler.answered_by': x.answeredBy });
        span.end(status >= 500 ? { failed: `HTTP ${status}` } : undefined);
      }
    });
    void dispatch(x).catch((err) => {
      logger.error({ err, requestId: x.requestId }, 'facade dispatch failed');
      if (!res.headersSent) respondError(x, 'reset', x.answeredBy);
      else res.destroy();
    });
  };

  /**
   * The facade's span of a request (tracing on): named by route, it continues the client's trace,
   * and the upstream (and a shadow copy) gets the span's traceparent in place of the client's.
   */
  function facadeSpan(x: Exchange): SpanHandle {
    const { req } = x;
    const incoming = req.headers.traceparent;
    const span = startSpan(`${req.method ?? 'GET'} ${x.route?.id ?? DEFAULT_ROUTE}`, 'server', typeof incoming === 'string' ? incoming : undefined, {
      'http.request.method': req.method ?? 'GET',
      'url.path': (req.url ?? '/').split('?')[0]!,
      'strangler.route': x.route?.id ?? DEFAULT_ROUTE,
      'strangler.serve': x.decision.upstream.name,
      'strangler.side': x.side,
      ...(x.decision.shadow && x.route?.shadow ? { 'strangler.shadow_to': x.route.shadow.candidate.name } : {}),
    });
    req.headers.traceparent = span.traceparent;
    return span;
  }

  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (String(req.headers.upgrade).toLowerCase() !== 'websocket') return notUpgraded(req, socket);
    const url = originForm(req);
    if (url === null) return answerSocket(socket, 400, 'BAD_REQUEST_TARGET', 'The request target must be a path or an absolute http(s) URL.');
    const table = current;
    const cleaned = cleanRequestHeaders(req, true);
    if (cleaned.refuse) return answerSocket(socket, 400, 'BAD_REQUEST_HEADERS', `Refused: ${cleaned.refuse}.`);
    const route = table.matcher.match(req.method ?? 'GET', url);
    const forced = cleaned.forceSide && checkToken(cleaned.adminToken) && (cleaned.forceSide === 'serve' || cleaned.forceSide === 'canary') ? cleaned.forceSide : undefined;
    const decision = decide(table, route, req, forced);
    // A WebSocket is long-lived: it is not run through the breaker, but an open breaker sends it
    // to the fallback (nothing was sent yet) or refuses it.
    let up = decision.upstream;
    if (up.breaker.opened && decision.fallback && !decision.fallback.breaker.opened) up = decision.fallback;
    if (up.breaker.opened) {
      answerSocket(socket, 503, 'UPSTREAM_CIRCUIT_OPEN', `The upstream ${up.name} is failing; its circuit breaker is open.`);
      return;
    }
    (req as IncomingMessage & { [ATTEMPT]?: Attempt })[ATTEMPT] = newAttempt(up.name, cleaned.requestId, cleaned.strip, null);
    table.lease.hold();
    upgraded.add(socket);
    socket.once('close', () => {
      upgraded.delete(socket);
      table.lease.release();
    });
    up.proxy.upgrade(req, socket, head);
  };

  /**
   * A request asking to switch to another protocol than WebSocket (`Upgrade: h2c`, as
   * `curl --http2` and Java's HttpClient send to http:// URLs): answered as the plain HTTP/1.1
   * request it also is, as a server without upgrade support would, on a connection that then
   * closes (Node has handed the socket over). With a body it is refused: Node stops reading
   * the request at its headers once it counts as an upgrade.
   */
  function notUpgraded(req: IncomingMessage, socket: Duplex) {
    const proto = String(req.headers.upgrade).slice(0, 50);
    const length = req.headers['content-length'];
    if (req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')) {
      answerSocket(socket, 400, 'UPGRADE_NOT_SUPPORTED', `The facade does not switch to "${proto}"; send the request without the Upgrade header.`);
      return;
    }
    delete req.headers.upgrade;
    // The other headers it names (HTTP2-Settings) stay hop-by-hop: cleanRequestHeaders drops them.
    const named = String(req.headers.connection ?? '').split(',').map((t) => t.trim()).filter((t) => t && t.toLowerCase() !== 'upgrade' && t.toLowerCase() !== 'keep-alive');
    req.headers.connection = ['close', ...named].join(', ');
    req.push(null); // no body; the parser, which would end the request, let go of it
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    // Left attached: the socket's close is what emits the response's 'close', on which the
    // handler releases the table lease and records the request.
    res.assignSocket(socket as Socket);
    res.once('finish', () => socket.end());
    handler(req, res);
  }

  function internal(_req: IncomingMessage, res: ServerResponse, url: string) {
    const name = url.slice(RESERVED_PREFIX.length).split('?')[0];
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    // This is the client-facing port: nothing here names a route, an upstream or a breaker.
    // Metrics and live state are on the admin port and the metrics port (server.ts).
    if (name === 'healthz') return send(200, { status: 'ok' });
    if (name === 'readyz') return send(closing ? 503 : 200, { status: closing ? 'stopping' : 'ready' });
    return send(404, {
      error: {
        code: 'ROUTE_NOT_FOUND',
        message: `Paths under ${RESERVED_PREFIX} are the facade's own (healthz, readyz) and are never proxied; metrics are served on the admin port and on the metrics port (--metrics-port).`,
      },
    });
  }

  async function routes(): Promise<RouteView[]> {
    const table = current;
    const stats = collectRouteStats(metrics);
    const empty: RouteStats = { requests: 0, errors: 0, p50Ms: null, p99Ms: null, canaryShare: null };
    const views: RouteView[] = table.routes.map((r) => {
      const b: Record<string, BreakerState> = { [r.serve.name]: breakerState(r.serve.breaker) };
      if (r.canary) b[r.canary.to.name] = breakerState(r.canary.to.breaker);
      if (r.shadow) b[r.shadow.candidate.name] = breakerState(r.shadow.candidate.breaker);
      return {
        id: r.id,
        match: r.spec.match,
        effects: r.effects,
        serve: r.serve.name,
        shadow: r.spec.shadow ?? null,
        canary: r.spec.canary ?? null,
        stats: stats.get(r.id) ?? empty,
        shadowStats: r.shadow ? { ...recorder.stats(r.id), noise: noise.noisyPaths(r.id) } : null,
        breakers: b,
      };
    });
    views.push({
      id: DEFAULT_ROUTE,
      match: { method: '*', path: '(unmatched)' },
      effects: 'unsafe',
      serve: table.fallback.name,
      shadow: null,
      canary: null,
      stats: stats.get(DEFAULT_ROUTE) ?? empty,
      shadowStats: null,
      breakers: { [table.fallback.name]: breakerState(table.fallback.breaker) },
    });
    return views;
  }

  async function close() {
    closing = true;
    stopWatching();
    await mirror.drain(2_000);
    await lock.catch(() => {});
    upstreams.close();
  }

  return Object.assign(events, {
    handler,
    upgrade,
    metrics,
    logger,
    routesFile,
    audit,
    adminEnabled: Boolean(options.adminToken),
    checkAdminToken: checkToken,
    table: () => current,
    reload,
    changeRoute,
    routes,
    mismatches: (opts?: { routeId?: string; limit?: number }) => recorder.list(opts),
    isReady: () => !closing,
    closeUpgraded: () => {
      for (const socket of upgraded) {
        // With an error: the proxy ends the upstream side of a WebSocket on its client side's
        // 'error' (a plain destroy emits neither 'end' nor 'error', and the upstream stays open).
        socket.once('error', () => {});
        socket.destroy(new Error('the facade is shutting down'));
      }
    },
    markStopping: () => {
      closing = true;
    },
    close,
  });
}

function wireObservability(events: EventEmitter, metrics: FacadeMetrics, logger: Logger) {
  events.on('facade:reload', (e) => logger.info(e, 'route table swapped'));
  events.on('facade:reload:invalid', (e) => logger.error(e, 'route table refused; the last good table keeps serving'));
  events.on('facade:fallback', (e) => logger.warn(e, 'request sent to the fallback upstream'));
  events.on('facade:upstream:failure', (e) => logger.debug(e, 'upstream attempt failed'));
  events.on('facade:breaker:open', (e) => logger.warn(e, 'circuit breaker opened'));
  events.on('facade:breaker:half-open', (e) => logger.info(e, 'circuit breaker half-open: trying one request'));
  events.on('facade:breaker:close', (e) => logger.info(e, 'circuit breaker closed'));
  events.on('facade:shadow:mismatch', (m) => logger.info({ mismatch: m }, 'shadow mismatch'));
  events.on('facade:shadow:noise', (e) => logger.info(e, 'shadow noise learned'));
  events.on('facade:shadow:error', (e) => logger.debug(e, 'shadow candidate failed'));
  // The mismatch ratio gauge reads the recorder's counts when scraped (metrics.ts).
  events.on('facade:shadow:result', ({ routeId, result }: { routeId: string; result: string }) => metrics.shadow.inc([routeId, result]));
}

/** Requests, 5xx, latency percentiles (interpolated in the histogram buckets) and canary share per route. */
function collectRouteStats(metrics: FacadeMetrics): Map<string, RouteStats> {
  const acc = new Map<string, { requests: number; errors: number; canary: number; counts: number[] }>();
  const bounds = metrics.duration.bounds;
  const entry = (route: string) => {
    let e = acc.get(route);
    if (!e) acc.set(route, (e = { requests: 0, errors: 0, canary: 0, counts: new Array<number>(bounds.length + 1).fill(0) }));
    return e;
  };
  for (const v of metrics.requests.samples()) {
    const e = entry(v.labels.route!);
    e.requests += v.value;
    if (Number(v.labels.code) >= 500) e.errors += v.value;
    if (v.labels.side === 'canary') e.canary += v.value;
  }
  for (const s of metrics.duration.series()) {
    const e = entry(s.labels.route!);
    s.counts.forEach((n, i) => (e.counts[i]! += n));
  }
  const out = new Map<string, RouteStats>();
  for (const [route, e] of acc) {
    const total = e.counts.reduce((a, b) => a + b, 0);
    const pct = (q: number): number | null => {
      if (!total) return null;
      const rank = q * total;
      let below = 0;
      for (let i = 0; i < e.counts.length; i++) {
        const n = e.counts[i]!;
        if (below + n >= rank) {
          const lo = i === 0 ? 0 : bounds[i - 1]!;
          if (i === bounds.length) return lo * 1000;
          const hi = bounds[i]!;
          return Math.round((lo + (hi - lo) * ((rank - below) / n)) * 1000 * 100) / 100;
        }
        below += n;
      }
      return null;
    };
    out.set(route, { requests: e.requests, errors: e.errors, p50Ms: pct(0.5), p99Ms: pct(0.99), canaryShare: e.requests ? e.canary / e.requests : null });
  }
  return out;
}

export { formatOf };
