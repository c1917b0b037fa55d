import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import CircuitBreaker from 'opossum';
import { AppError, commonErrors, isAppError } from './errors.ts';
import { currentContext, newRequestId, runWithContext } from './context.ts';
import { startSpan, tracingEnabled } from './tracing.ts';
import { backoffDelay, sleep } from './retry.ts';

export { grpc };

/** Loads a .proto file: camelCase fields, enums and 64-bit ints as strings, defaults filled. */
export function loadProto(file: string): grpc.GrpcObject {
  const def = protoLoader.loadSync(file, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
  return grpc.loadPackageDefinition(def);
}

const STATUS_TO_GRPC: Record<number, grpc.status> = {
  400: grpc.status.INVALID_ARGUMENT,
  401: grpc.status.UNAUTHENTICATED,
  402: grpc.status.FAILED_PRECONDITION,
  403: grpc.status.PERMISSION_DENIED,
  404: grpc.status.NOT_FOUND,
  409: grpc.status.ALREADY_EXISTS,
  413: grpc.status.RESOURCE_EXHAUSTED,
  503: grpc.status.UNAVAILABLE,
  504: grpc.status.DEADLINE_EXCEEDED,
};

const GRPC_TO_STATUS: Partial<Record<grpc.status, number>> = {
  [grpc.status.UNAVAILABLE]: 503,
  [grpc.status.DEADLINE_EXCEEDED]: 504,
  [grpc.status.CANCELLED]: 503,
};

/**
 * Wraps a unary handler: restores the caller's request id and traceparent from metadata into the
 * context, and turns coded errors into gRPC statuses carrying the code (`x-error-code`) and
 * details (`x-error-details`) in trailers, so the client can rebuild the same AppError.
 */
export function unary<Req, Res>(handler: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const requestId = String(call.metadata.get('x-request-id')[0] ?? '') || newRequestId();
    const parent = String(call.metadata.get('traceparent')[0] ?? '');
    const span = tracingEnabled() ? startSpan(rpcName(call.getPath()), 'server', parent, { 'rpc.system': 'grpc' }) : startSpan('grpc', 'server', parent);
    const ctx = { requestId, traceparent: span.traceparent };
    runWithContext(ctx, () => {
      handler(call.request, call).then(
        (res) => {
          span.setAttributes({ 'rpc.grpc.status_code': grpc.status.OK });
          span.end();
          callback(null, res);
        },
        (err: unknown) => {
          const appErr = isAppError(err) ? err : commonErrors.INTERNAL();
          const code = STATUS_TO_GRPC[appErr.status] ?? grpc.status.INTERNAL;
          span.setAttributes({ 'rpc.grpc.status_code': code, 'strangler.error_code': appErr.code });
          // Only server faults fail the span: a refused request is the service doing its job.
          span.end(appErr.status >= 500 ? { error: err } : undefined);
          const trailers = new grpc.Metadata();
          trailers.set('x-error-code', appErr.code);
          if (appErr.details !== undefined) trailers.set('x-error-details', JSON.stringify(appErr.details));
          callback({ code, details: appErr.message, metadata: trailers });
        },
      );
    });
  };
}

/** Rebuilds the AppError a server raised (or a transport error: 503 unavailable, 504 deadline). */
export function fromGrpcError(err: grpc.ServiceError): AppError {
  const code = err.metadata?.get('x-error-code')[0];
  const details = err.metadata?.get('x-error-details')[0];
  const status = Object.entries(STATUS_TO_GRPC).find(([, g]) => g === err.code)?.[0];
  if (code) return new AppError(String(code), Number(status ?? 500), err.details, details ? JSON.parse(String(details)) : undefined, { cause: err });
  const httpStatus = GRPC_TO_STATUS[err.code] ?? 502;
  return new AppError(httpStatus === 504 ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE', httpStatus, `gRPC call failed: ${err.details || grpc.status[err.code]}`, undefined, { cause: err });
}

export interface GrpcCallOptions {
  /** Per attempt, in ms (default 1,000). */
  deadlineMs?: number;
  /** Attempts in all, including the first (default 3). Only safe to retry idempotent calls. */
  attempts?: number;
  /** Backoff between attempts (default base 50 ms, cap 1 s, full jitter). */
  backoff?: { baseMs?: number; maxMs?: number };
}

/** gRPC statuses worth another attempt: the server did not (or may not have) run the call. */
const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.RESOURCE_EXHAUSTED]);

type UnaryMethod<Req, Res> = (req: Req, metadata: grpc.Metadata, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: Res) => void) => grpc.ClientUnaryCall;

/** Statuses that say the request was refused (a 4xx), not that the call failed: they do not fail a span. */
const REFUSALS = new Set([grpc.status.INVALID_ARGUMENT, grpc.status.UNAUTHENTICATED, grpc.status.FAILED_PRECONDITION, grpc.status.PERMISSION_DENIED, grpc.status.NOT_FOUND, grpc.status.ALREADY_EXISTS]);

/** "/strangler.notification.v1.Notifications/Send" -> "strangler.notification.v1.Notifications/Send", the span name OpenTelemetry's conventions give. */
const rpcName = (path: string): string => path.replace(/^\//, '');

function callOnce<Req, Res>(client: grpc.Client, service: string, method: string, request: Req, deadlineMs: number, attempt: number): Promise<Res> {
  const ctx = currentContext();
  const metadata = new grpc.Metadata();
  if (ctx?.requestId) metadata.set('x-request-id', ctx.requestId);
  const fn = (client as unknown as Record<string, UnaryMethod<Req, Res>>)[method];
  if (typeof fn !== 'function') throw new Error(`gRPC client has no method ${method}`);
  // One span per attempt; without tracing it only passes the caller's traceparent on.
  const span = tracingEnabled() ? startSpan(`${service}/${method}`, 'client', ctx?.traceparent, { 'rpc.system': 'grpc', 'rpc.method': method, 'strangler.attempt': attempt + 1 }) : null;
  const traceparent = span ? span.traceparent : ctx?.traceparent;
  if (traceparent) metadata.set('traceparent', traceparent);
  return new Promise((resolve, reject) => {
    fn.call(client, request, metadata, { deadline: Date.now() + deadlineMs }, (err, res) => {
      span?.setAttributes({ 'rpc.grpc.status_code': err ? err.code : grpc.status.OK });
      span?.end(err && !REFUSALS.has(err.code) ? { error: err } : undefined);
      if (err) reject(err);
      else resolve(res);
    });
  });
}

/**
 * A client for one upstream service: every call gets a deadline, retries of transport failures
 * with jittered backoff (idempotent calls only: the caller must make calls idempotent, e.g. with
 * a client-chosen id), and ONE circuit breaker for the upstream, created once. Application errors
 * (4xx codes) neither retry nor count against the breaker. When the breaker is open calls fail
 * at once with 503 UPSTREAM_UNAVAILABLE, without touching the network.
 */
export class ResilientGrpcClient {
  readonly breaker: CircuitBreaker<[() => Promise<unknown>], unknown>;

  constructor(
    readonly client: grpc.Client,
    readonly name: string,
    private readonly defaults: GrpcCallOptions = {},
    breakerOptions: CircuitBreaker.Options = {},
  ) {
    this.breaker = new CircuitBreaker((fn: () => Promise<unknown>) => fn(), {
      timeout: false,
      resetTimeout: 5_000,
      errorThresholdPercentage: 50,
      volumeThreshold: 5,
      rollingCountTimeout: 10_000,
      // Application errors mean the service is up and answering: they must not open the breaker.
      errorFilter: (err: unknown) => isAppError(err) && err.status < 500,
      ...breakerOptions,
      name,
    });
  }

  async call<Req, Res>(method: string, request: Req, options: GrpcCallOptions = {}): Promise<Res> {
    const { deadlineMs = 1_000, attempts = 3, backoff = { baseMs: 50, maxMs: 1_000 } } = { ...this.defaults, ...options };
    for (let attempt = 0; ; attempt++) {
      try {
        return (await this.breaker.fire(async () => {
          try {
            return await callOnce<Req, Res>(this.client, this.name, method, request, deadlineMs, attempt);
          } catch (err) {
            throw Object.assign(fromGrpcError(err as grpc.ServiceError), { grpcCode: (err as grpc.ServiceError).code });
          }
        })) as Res;
      } catch (err) {
        if (this.breaker.opened && !isAppError(err)) throw commonErrors.UNAVAILABLE(`${this.name} is unavailable (circuit open).`, undefined, { cause: err });
        const grpcCode = (err as { grpcCode?: grpc.status }).grpcCode;
        if (grpcCode === undefined || !RETRYABLE.has(grpcCode) || attempt + 1 >= attempts) throw err;
        await sleep(backoffDelay(attempt, backoff));
      }
    }
  }

  close(): void {
    this.breaker.shutdown();
    this.client.close();
  }
}

/** Binds a server on host:port (0 = any free port) and returns the port. */
export function bindGrpcServer(server: grpc.Server, port: number, host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, actual) => {
      if (!err) return resolve(actual);
      // grpc-js folds the listen error into its message ("No address added ... [listen EADDRINUSE ...]"):
      // carried as a code, address and port like a Node listen error (listenFailure).
      const code = /\b(EADDRINUSE|EACCES|EADDRNOTAVAIL)\b/.exec(err.message)?.[1];
      reject(code ? Object.assign(new Error(`gRPC server cannot listen on ${host}:${port}: ${err.message}`), { code, syscall: 'listen', address: host, port }) : err);
    });
  });
}

/** Lets in-flight calls finish for up to `graceMs`, then cancels the rest. */
export function shutdownGrpcServer(server: grpc.Server, graceMs = 5_000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
