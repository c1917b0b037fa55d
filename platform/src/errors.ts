/**
 * One registry of coded errors. Match on `err.code`, never on `instanceof`: errors cross
 * process boundaries (HTTP, gRPC, events) as codes.
 */
export class AppError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly details?: unknown,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AppError';
  }

  toJSON() {
    return { error: { code: this.code, message: this.message, ...(this.details === undefined ? {} : { details: this.details }) } };
  }
}

export interface ErrorDef {
  status: number;
  message: string;
}

export type ErrorFactory = (message?: string, details?: unknown, options?: { cause?: unknown }) => AppError;

/** Declares a set of coded errors; each entry becomes a factory `errors.CODE(message?, details?)`. */
export function defineErrors<T extends Record<string, ErrorDef>>(defs: T): { [K in keyof T]: ErrorFactory } {
  const out = {} as { [K in keyof T]: ErrorFactory };
  for (const [code, def] of Object.entries(defs)) {
    out[code as keyof T] = (message, details, options) => new AppError(code, def.status, message ?? def.message, details, options);
  }
  return out;
}

/** Errors every HTTP process shares. Domain registries add their own next to their code. */
export const commonErrors = defineErrors({
  VALIDATION_FAILED: { status: 400, message: 'The request is invalid; see details for every problem.' },
  MALFORMED_JSON: { status: 400, message: 'The request body is not valid JSON.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Send the body as application/json.' },
  UNAUTHENTICATED: { status: 401, message: 'Send a valid bearer token in the Authorization header.' },
  FORBIDDEN: { status: 403, message: 'You may not access this resource.' },
  NOT_FOUND: { status: 404, message: 'No such resource.' },
  ROUTE_NOT_FOUND: { status: 404, message: 'No such endpoint.' },
  CONFLICT: { status: 409, message: 'The request conflicts with the current state.' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'The request body is too large.' },
  INTERNAL: { status: 500, message: 'Internal error; the request id identifies it in the logs.' },
  UNAVAILABLE: { status: 503, message: 'A dependency is unavailable; try again shortly.' },
});

export function isAppError(err: unknown): err is AppError {
  return typeof err === 'object' && err !== null && (err as { name?: unknown }).name === 'AppError' && typeof (err as AppError).code === 'string';
}

/**
 * Postgres SQLSTATE codes worth retrying: the same transaction can succeed if run again.
 * Serialization failure and deadlock; admin, crash and startup shutdowns; connection failures;
 * too many connections (a failover or a deploy briefly exceeds the limit).
 */
const RETRYABLE_PG = new Set(['40001', '40P01', '57P01', '57P02', '57P03', '08000', '08003', '08006', '08001', '08004', '53300']);
/** Socket errors of a database that is down, restarting, unreachable or not resolvable yet. */
const RETRYABLE_NET = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * True for serialization failures, deadlocks, admin shutdowns, dropped or refused connections,
 * connection attempts that time out, and a pool with no connection to give within its timeout
 * (knex's KnexTimeoutError: the database is unreachable, or every connection is busy).
 */
export function isTransientDbError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') {
    if ((err as { name?: unknown } | null)?.name === 'KnexTimeoutError') return true;
    const msg = String((err as { message?: unknown } | null)?.message ?? '');
    // "timeout expired": pg's connectionTimeoutMillis ran out (a host that does not answer).
    return /Connection terminated|terminating connection|Client has encountered a connection error|timeout exceeded when trying to connect|^timeout expired$/i.test(msg);
  }
  return RETRYABLE_PG.has(code) || RETRYABLE_NET.has(code);
}
