import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type ErrorRequestHandler, type Express, type RequestHandler } from 'express';
import type { z } from 'zod';
import { AppError, commonErrors, isAppError } from './errors.ts';
import { newRequestId, runWithContext } from './context.ts';
import { startSpan, tracingEnabled } from './tracing.ts';
import type { Logger } from './logger.ts';

export const REQUEST_ID_HEADER = 'x-request-id';
export const DRY_RUN_HEADER = 'x-strangler-dry-run';

/**
 * Gives every request an id (kept from `x-request-id` when the caller sent a sane one), a
 * traceparent (a child span of the caller's), and runs the rest of the chain inside that context
 * so logs, outgoing gRPC calls and outbox events carry them. `x-strangler-dry-run: 1` marks
 * a dry run (the facade strips the header from clients, so only it can set it).
 */
export function requestContext(): RequestHandler {
  return (req, res, next) => {
    const incoming = req.get(REQUEST_ID_HEADER);
    const requestId = incoming && /^[\w.:-]{1,128}$/.test(incoming) ? incoming : newRequestId();
    const traced = tracingEnabled();
    // The attributes only for a span that records them: req.path parses the URL.
    const span = startSpan(req.method, 'server', req.get('traceparent'), traced ? { 'http.request.method': req.method, 'url.path': req.path } : undefined);
    if (traced) {
      res.once('close', () => {
        // Named by the route pattern once routing found one ("GET /api/orders/:id"), as the metrics are.
        const route: unknown = req.route?.path;
        if (typeof route === 'string') span.rename(`${req.method} ${route}`);
        const status = res.writableFinished ? res.statusCode : 499;
        span.setAttributes({ 'http.response.status_code': status, ...(typeof route === 'string' ? { 'http.route': route } : {}) });
        span.end(status >= 500 ? { failed: `HTTP ${status}` } : undefined);
      });
    }
    res.setHeader(REQUEST_ID_HEADER, requestId);
    runWithContext({ requestId, traceparent: span.traceparent, dryRun: req.get(DRY_RUN_HEADER) === '1' }, next);
  };
}

/** JSON bodies only, bounded; malformed JSON and oversized bodies become coded 400/413 errors. */
export const jsonBody = (limit = '100kb'): RequestHandler => express.json({ limit, strict: true });

export interface FieldProblem {
  field: string;
  problem: string;
}

const fieldName = (path: ReadonlyArray<PropertyKey>) => (path.length ? path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${String(p)}`)).join('') : '(body)');

/**
 * Parses `input` with `schema`; on failure throws VALIDATION_FAILED listing every field problem.
 * A string anywhere in the result that holds the NUL character is a problem too: Postgres
 * stores it in neither text nor jsonb, so it would fail as a 500 at the database.
 */
export function validate<S extends z.ZodType>(schema: S, input: unknown): z.infer<S> {
  const result = schema.safeParse(input);
  if (result.success) {
    const problems = nulProblems(result.data, []);
    if (problems.length) throw commonErrors.VALIDATION_FAILED(undefined, problems);
    return result.data;
  }
  const problems: FieldProblem[] = result.error.issues.map((issue) => ({ field: fieldName(issue.path), problem: issue.message }));
  throw commonErrors.VALIDATION_FAILED(undefined, problems);
}

function nulProblems(value: unknown, path: PropertyKey[], out: FieldProblem[] = []): FieldProblem[] {
  if (typeof value === 'string') {
    if (value.includes('\u0000')) out.push({ field: fieldName(path), problem: 'must not contain the NUL character (\\u0000)' });
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => nulProblems(v, [...path, i], out));
  } else if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
    for (const [k, v] of Object.entries(value)) {
      if (k.includes('\u0000')) out.push({ field: fieldName([...path, k]), problem: 'must not contain the NUL character (\\u0000)' });
      nulProblems(v, [...path, k], out);
    }
  }
  return out;
}

export const notFoundHandler = (): RequestHandler => (_req, _res, next) => next(commonErrors.ROUTE_NOT_FOUND());

/**
 * The last middleware: coded errors answer with their status and JSON body; body-parser errors
 * map to MALFORMED_JSON/PAYLOAD_TOO_LARGE; anything else is logged and answered as a bare 500
 * (no stack, no SQL).
 */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    let appErr: AppError;
    if (isAppError(err)) appErr = err;
    else if (err?.type === 'entity.parse.failed') appErr = commonErrors.MALFORMED_JSON();
    else if (err?.type === 'entity.too.large') appErr = commonErrors.PAYLOAD_TOO_LARGE(`The request body exceeds ${err.limit} bytes.`);
    else if (err?.type === 'encoding.unsupported' || err?.type === 'charset.unsupported') appErr = commonErrors.UNSUPPORTED_MEDIA_TYPE(err.message);
    else if (typeof err?.status === 'number' && err.status >= 400 && err.status < 500) appErr = new AppError('BAD_REQUEST', err.status, 'The request could not be read.');
    else {
      logger.error({ err, method: req.method, url: req.originalUrl }, 'unhandled error');
      appErr = commonErrors.INTERNAL();
    }
    if (appErr.status >= 500 && isAppError(err)) logger.warn({ code: appErr.code, url: req.originalUrl }, appErr.message);
    if (res.headersSent) return res.destroy();
    res.status(appErr.status).json(appErr.toJSON());
  };
}

export type ReadinessCheck = () => Promise<unknown>;

/** `/healthz`: the process is alive. `/readyz`: every dependency answered within 2 s. */
export function healthRoutes(checks: Record<string, ReadinessCheck>): express.Router {
  const router = express.Router();
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', async (_req, res) => {
    const results: Record<string, string> = {};
    await Promise.all(
      Object.entries(checks).map(async ([name, check]) => {
        try {
          await withTimeout(check(), 2_000, `${name} did not answer within 2 s`);
          results[name] = 'ok';
        } catch (err) {
          results[name] = (err as Error).message || 'failed';
        }
      }),
    );
    const ready = Object.values(results).every((r) => r === 'ok');
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not ready', checks: results });
  });
  return router;
}

export function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]);
}

export interface RunningServer {
  server: http.Server;
  port: number;
  url: string;
  /** Stops accepting, lets in-flight requests finish (at most `graceMs`), then closes idle sockets. */
  close(graceMs?: number): Promise<void>;
}

/** Listens on `host:port` (port 0 picks a free one). */
export async function listen(app: Express | http.RequestListener, port: number, host = '127.0.0.1'): Promise<RunningServer> {
  const server = http.createServer(app);
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    server,
    port: actual,
    url: `http://${host}:${actual}`,
    close: (graceMs = 8_000) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}

/**
 * Graceful shutdown on SIGTERM/SIGINT: runs `steps` in order (stop accepting, drain, close pools
 * and channels) and exits 0; if they take longer than `timeoutMs` (default 10 s) it exits 1.
 */
export function onShutdown(logger: Logger, steps: Array<() => Promise<unknown>>, timeoutMs = 10_000): void {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const timer = setTimeout(() => {
      logger.error('shutdown took longer than %d ms; exiting', timeoutMs);
      process.exit(1);
    }, timeoutMs);
    timer.unref();
    let code = 0;
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        code = 1;
        logger.error({ err }, 'shutdown step failed');
      }
    }
    logger.info('stopped');
    process.exit(code);
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
}

/**
 * Why a listener could not start, with the setting that moves it, for the errors an operator
 * fixes by changing a port or address (`settings` maps each port tried to its setting); null for
 * any other error. Servers say it and exit 2 rather than log a stack trace.
 */
export function listenFailure(err: unknown, settings: ReadonlyArray<readonly [port: number | null | undefined, setting: string]>): string | null {
  const e = err as { code?: unknown; port?: unknown; address?: unknown; syscall?: unknown };
  // Only a listen: the same codes from connecting to a database or reading a file are other failures.
  if (e?.syscall !== 'listen') return null;
  const why = e?.code === 'EADDRINUSE' ? 'the port is in use (another copy of this process, or another program?)' : e?.code === 'EACCES' ? 'permission denied' : e?.code === 'EADDRNOTAVAIL' ? 'no such address on this host' : null;
  if (!why) return null;
  const setting = settings.find(([port]) => port === e.port)?.[1];
  return `Cannot listen on ${String(e.address)}:${String(e.port)}: ${why}.${setting ? ` Choose another with ${setting}.` : ''}`;
}

/**
 * Ends a server process whose start failed: invalid configuration or a listener problem said
 * plainly, with what to change (exit 2), anything else logged as fatal with its stack (exit 1).
 */
export function exitAfterFailedStart(logger: Logger, err: unknown, ports: ReadonlyArray<readonly [port: number | null | undefined, setting: string]>, what: string): never {
  const failure = (err as { code?: unknown })?.code === 'CONFIG_INVALID' ? (err as Error).message : listenFailure(err, ports);
  if (failure) {
    console.error(failure);
    process.exit(2);
  }
  logger.fatal({ err }, `${what} failed to start`);
  process.exit(1);
}
