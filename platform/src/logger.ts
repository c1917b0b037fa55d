import { pino, type Logger } from 'pino';
import { currentContext } from './context.ts';

export type { Logger };

/**
 * JSON logs (pino) that carry the request and trace ids of the current context. Level from
 * LOG_LEVEL; under vitest the default is `silent` so suites stay readable.
 */
export function createLogger(service: string, level = process.env.LOG_LEVEL ?? (process.env.VITEST ? 'silent' : 'info')): Logger {
  return pino({
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin() {
      const ctx = currentContext();
      return ctx ? { requestId: ctx.requestId, traceId: ctx.traceparent?.split('-')[1] } : {};
    },
  });
}
