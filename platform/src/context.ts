import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes, randomUUID } from 'node:crypto';

/** What travels with a unit of work across every hop (HTTP, gRPC metadata, AMQP headers). */
export interface RequestContext {
  requestId: string;
  traceparent?: string;
  /** Set while serving `x-strangler-dry-run: 1` requests. */
  dryRun?: boolean;
}

const storage = new AsyncLocalStorage<RequestContext>();

export const currentContext = (): RequestContext | undefined => storage.getStore();
export const runWithContext = <T>(ctx: RequestContext, fn: () => T): T => storage.run(ctx, fn);

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export function isValidTraceparent(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const m = TRACEPARENT.exec(value);
  return !!m && !/^0+$/.test(m[1]!) && !/^0+$/.test(m[2]!);
}

/** A new W3C traceparent; a child of `parent` (same trace, new span) when one is given. */
export function newTraceparent(parent?: string): string {
  const traceId = parent && isValidTraceparent(parent) ? parent.split('-')[1]! : randomBytes(16).toString('hex');
  return `00-${traceId}-${randomBytes(8).toString('hex')}-01`;
}

export const newRequestId = (): string => randomUUID();
