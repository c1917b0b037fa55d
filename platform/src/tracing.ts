import { ROOT_CONTEXT, SpanKind, SpanStatusCode, diag, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { isValidTraceparent, newTraceparent } from './context.ts';
import type { Logger } from './logger.ts';

/**
 * OpenTelemetry spans at the toolkit's own boundaries, exported over OTLP/HTTP (JSON) when the
 * standard variables ask for it: `OTEL_EXPORTER_OTLP_ENDPOINT` (e.g. `http://127.0.0.1:4318`,
 * `/v1/traces` is appended) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is). Also honoured:
 * `OTEL_SDK_DISABLED=true` and `OTEL_TRACES_EXPORTER=none` (off), `OTEL_SERVICE_NAME`,
 * `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`.
 *
 * The spans: an HTTP request served (platform/http.ts requestContext, and the facade's own), a
 * gRPC call made and served (platform/grpc.ts), an outbox row published by the relay and an event
 * processed by a consumer (outbox/). Each span's id is what the hop hands on in `traceparent`, so
 * the trace reads facade -> monolith -> outbox publish -> consumer -> the consumer's own writes.
 *
 * Off (the default), startSpan() costs what the context plumbing always cost: a new traceparent,
 * a child of the caller's, and nothing is recorded.
 */

let tracer: Tracer | null = null;
let provider: BasicTracerProvider | null = null;

export type SpanKindName = 'server' | 'client' | 'producer' | 'consumer' | 'internal';

const KINDS: Record<SpanKindName, SpanKind> = {
  server: SpanKind.SERVER,
  client: SpanKind.CLIENT,
  producer: SpanKind.PRODUCER,
  consumer: SpanKind.CONSUMER,
  internal: SpanKind.INTERNAL,
};

export interface SpanHandle {
  /** This span's W3C traceparent: what the hop passes on (headers, metadata, outbox rows). */
  readonly traceparent: string;
  /** Renames the span (an HTTP server span learns its route only once routing is done). */
  rename(name: string): void;
  setAttributes(attributes: Attributes): void;
  /** Ends the span; an error (or `failed`) marks it failed. Later calls do nothing. */
  end(outcome?: { error?: unknown; failed?: string }): void;
}

const noop = (): void => {};

/** The traceparent of a span that records nothing: the old behaviour, and the one with tracing off. */
const untraced = (parent: string | undefined): SpanHandle => ({ traceparent: newTraceparent(parent), rename: noop, setAttributes: noop, end: noop });

/** Reads the tracing settings from the environment; null when spans are not to be exported. */
export function tracingEndpoint(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return null;
  const exporters = env.OTEL_TRACES_EXPORTER?.split(',').map((s) => s.trim().toLowerCase());
  if (exporters?.includes('none')) return null;
  if (exporters && exporters.some((e) => e && e !== 'otlp')) {
    throw new Error(`OTEL_TRACES_EXPORTER="${env.OTEL_TRACES_EXPORTER}": only "otlp" (OTLP over HTTP, JSON) and "none" are supported.`);
  }
  const [name, value] = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    ? ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT]
    : ['OTEL_EXPORTER_OTLP_ENDPOINT', env.OTEL_EXPORTER_OTLP_ENDPOINT];
  if (!value?.trim()) return null;
  let url: URL;
  try {
    url = new URL(value.trim());
  } catch {
    throw new Error(`${name}="${value}" is not a URL: give the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`${name}="${value}": spans are exported over OTLP/HTTP, so the URL must start with http:// or https:// (gRPC collectors listen on 4317, HTTP on 4318).`);
  }
  return name === 'OTEL_EXPORTER_OTLP_ENDPOINT' ? `${url.href.replace(/\/$/, '')}/v1/traces` : url.href;
}

/**
 * Starts exporting spans as `serviceName` (OTEL_SERVICE_NAME wins) when the environment asks for
 * it (see tracingEndpoint; a malformed setting throws, saying what to fix). Returns the shutdown
 * step, which exports what is left: give it to onShutdown. Export failures are logged, at most
 * one a minute; spans that could not be exported are dropped, never retried without bound.
 * `env` decides whether and where to export (tests pass their own); the SDK reads the other
 * OTEL_* settings (sampler, service name, batching) from the process environment.
 */
export function startTracing(serviceName: string, logger: Logger, env: NodeJS.ProcessEnv = process.env): () => Promise<void> {
  const url = tracingEndpoint(env);
  if (!url || provider) return stopTracing;
  let lastWarning = -Infinity;
  diag.setLogger(
    {
      error: (message, ...args) => {
        if (performance.now() - lastWarning < 60_000) return;
        lastWarning = performance.now();
        logger.warn({ detail: args.map(String).join(' ') }, `tracing: ${message}`);
      },
      warn: () => {},
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    { suppressOverrideMessage: true },
  );
  const resource = defaultResource()
    .merge(resourceFromAttributes({ 'service.name': serviceName }))
    .merge(detectResources({ detectors: [envDetector] }));
  provider = new BasicTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url }))] });
  tracer = provider.getTracer('strangler');
  logger.info({ url, otelServiceName: resource.attributes['service.name'] }, 'exporting OpenTelemetry spans');
  return stopTracing;
}

/** Exports the spans ended so far (tests, and before a process exits). */
export async function flushTracing(): Promise<void> {
  await provider?.forceFlush();
}

/** Exports what is left and stops recording; startSpan() then records nothing. */
export async function stopTracing(): Promise<void> {
  const p = provider;
  provider = null;
  tracer = null;
  await p?.shutdown();
}

export const tracingEnabled = (): boolean => tracer !== null;

/**
 * Starts a span that continues `parent` (a traceparent from a header, metadata or an event; a
 * malformed one starts a new trace). With tracing off it records nothing and its traceparent is
 * a fresh child id of the parent, as before.
 */
export function startSpan(name: string, kind: SpanKindName, parent: string | null | undefined, attributes?: Attributes): SpanHandle {
  const valid = isValidTraceparent(parent);
  if (!tracer) return untraced(valid ? parent : undefined);
  const parentContext = valid
    ? trace.setSpanContext(ROOT_CONTEXT, { traceId: parent.slice(3, 35), spanId: parent.slice(36, 52), traceFlags: parseInt(parent.slice(53, 55), 16) & 1, isRemote: true })
    : ROOT_CONTEXT;
  return recording(tracer.startSpan(name, { kind: KINDS[kind], ...(attributes ? { attributes } : {}) }, parentContext));
}

function recording(span: Span): SpanHandle {
  const sc = span.spanContext();
  let ended = false;
  return {
    traceparent: `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & 1 ? '01' : '00'}`,
    rename: (name) => void span.updateName(name),
    setAttributes: (attributes) => void span.setAttributes(attributes),
    end(outcome) {
      if (ended) return;
      ended = true;
      if (outcome?.error !== undefined) {
        const err = outcome.error instanceof Error ? outcome.error : new Error(String(outcome.error));
        span.recordException(err);
        span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
      } else if (outcome?.failed) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.failed });
      }
      span.end();
    },
  };
}
