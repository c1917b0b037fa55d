import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import {
  AppError,
  ResilientGrpcClient,
  bindGrpcServer,
  createLogger,
  currentContext,
  errorHandler,
  flushTracing,
  grpc,
  requestContext,
  shutdownGrpcServer,
  startSpan,
  startTracing,
  stopTracing,
  tracingEndpoint,
  unary,
} from '../src/index.ts';
import { echoProto } from './fixtures/echo.ts';
import { startOtlpCollector, startServer, type CollectedSpan } from '../src/testing/index.ts';

const logger = createLogger('tracing-test');

// The gRPC server echoes the traceparent it runs under; failWith raises a coded error of that status.
const server = new grpc.Server();
server.addService(echoProto.echo.Echo.service, {
  say: unary(async (req: { message: string; failWith: string }) => {
    if (req.failWith) throw new AppError('ECHO_REFUSED', Number(req.failWith), 'refused');
    return { message: currentContext()?.traceparent ?? '', requestId: currentContext()?.requestId ?? '' };
  }),
});
const grpcPort = await bindGrpcServer(server, 0);
afterAll(() => shutdownGrpcServer(server, 100));
const client = new ResilientGrpcClient(new echoProto.echo.Echo(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure()), 'echo', { attempts: 1 });
afterAll(() => client.close());

// An HTTP service that calls the gRPC one: GET /hello/:name answers with both traceparents.
const app = express();
app.use(requestContext());
app.get('/hello/:name', async (req, res, next) => {
  try {
    const reply = await client.call<object, { message: string }>('say', { message: req.params.name, failWith: String(req.query.fail ?? '') });
    res.json({ http: currentContext()?.traceparent, grpc: reply.message });
  } catch (err) {
    next(err);
  }
});
app.use(errorHandler(logger));
const http = await startServer(app);

const collector = await startOtlpCollector();
afterAll(() => stopTracing());

const PARENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_SPAN = '00f067aa0ba902b7';
const get = (p: string, traceparent: string) => fetch(`${http.url}${p}`, { headers: { traceparent } });
const byName = (spans: CollectedSpan[], name: string) => spans.filter((s) => s.name === name);

describe('tracing settings', () => {
  it('is off unless an OTLP endpoint is given, and honours the standard switches', () => {
    expect(tracingEndpoint({})).toBeNull();
    expect(tracingEndpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318/' })).toBe('http://127.0.0.1:4318/v1/traces');
    expect(tracingEndpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://c/traces' })).toBe('https://c/traces');
    expect(tracingEndpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'true' })).toBeNull();
    expect(tracingEndpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_EXPORTER: 'none' })).toBeNull();
  });

  it('refuses a malformed setting, saying what to give instead', () => {
    expect(() => tracingEndpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'jaeger:4318' })).toThrow(/must start with http:\/\/ or https:\/\//);
    expect(() => tracingEndpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'not a url' })).toThrow(/OTEL_EXPORTER_OTLP_ENDPOINT="not a url" is not a URL: give the collector's OTLP\/HTTP address/);
    expect(() => tracingEndpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_EXPORTER: 'zipkin' })).toThrow(/only "otlp" .* and "none" are supported/);
    expect(() => startTracing('x', logger, { OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://c:4317' })).toThrow(/gRPC collectors listen on 4317, HTTP on 4318/);
  });
});

// In file order: tracing off first, then on.
describe('with tracing off', () => {
  it('still hands a child traceparent of the caller on at every hop, and exports nothing', async () => {
    const res = await get('/hello/off', `00-${PARENT_TRACE}-${PARENT_SPAN}-01`);
    const body = (await res.json()) as { http: string; grpc: string };
    expect(body.http).toMatch(new RegExp(`^00-${PARENT_TRACE}-[0-9a-f]{16}-01$`));
    expect(body.http).not.toContain(PARENT_SPAN);
    expect(body.grpc.split('-')[1]).toBe(PARENT_TRACE);
    expect(startSpan('x', 'internal', undefined).traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    await flushTracing();
    expect(collector.spans).toEqual([]);
  });
});

describe('with tracing on', () => {
  it('exports an HTTP server span, a gRPC client span and a gRPC server span, each the child of the one before', async () => {
    startTracing('tracing-test', logger, { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url });
    const res = await get('/hello/world', `00-${PARENT_TRACE}-${PARENT_SPAN}-01`);
    const body = (await res.json()) as { http: string; grpc: string };
    await flushTracing();
    const spans = await collector.waitFor((s) => s.length >= 3);
    const [server] = byName(spans, 'GET /hello/:name');
    const [call] = byName(spans, 'echo/say');
    const [served] = byName(spans, 'echo.Echo/Say');
    expect(server).toMatchObject({ service: 'tracing-test', kind: 2, traceId: PARENT_TRACE, parentSpanId: PARENT_SPAN, status: 0 });
    expect(server!.attributes).toMatchObject({ 'http.request.method': 'GET', 'http.route': '/hello/:name', 'http.response.status_code': 200 });
    expect(call).toMatchObject({ kind: 3, traceId: PARENT_TRACE, parentSpanId: server!.spanId, status: 0 });
    expect(served).toMatchObject({ kind: 2, traceId: PARENT_TRACE, parentSpanId: call!.spanId, status: 0 });
    // What the hops handed on is the exported spans' ids.
    expect(body.http).toBe(`00-${PARENT_TRACE}-${server!.spanId}-01`);
    expect(body.grpc).toBe(`00-${PARENT_TRACE}-${served!.spanId}-01`);
  });

  it('fails the spans of a server fault, not those of a refused request', async () => {
    collector.spans.length = 0;
    await get('/hello/refused?fail=404', `00-${PARENT_TRACE}-${PARENT_SPAN}-01`);
    await get('/hello/broken?fail=500', `00-${PARENT_TRACE}-${PARENT_SPAN}-01`);
    await flushTracing();
    const spans = await collector.waitFor((s) => s.length >= 6);
    const statuses = (name: string) => byName(spans, name).map((s) => [s.attributes['rpc.grpc.status_code'] ?? s.attributes['http.response.status_code'], s.status]);
    expect(statuses('GET /hello/:name')).toEqual([
      [404, 0],
      [500, 2],
    ]);
    expect(statuses('echo/say')).toEqual([
      [grpc.status.NOT_FOUND, 0],
      [grpc.status.INTERNAL, 2],
    ]);
    expect(statuses('echo.Echo/Say')).toEqual([
      [grpc.status.NOT_FOUND, 0],
      [grpc.status.INTERNAL, 2],
    ]);
  });

  it('records nothing for a caller that did not sample its trace, and keeps the trace id going', async () => {
    collector.spans.length = 0;
    const res = await get('/hello/unsampled', `00-${PARENT_TRACE}-${PARENT_SPAN}-00`);
    const body = (await res.json()) as { http: string; grpc: string };
    expect(body.http).toMatch(new RegExp(`^00-${PARENT_TRACE}-[0-9a-f]{16}-00$`));
    expect(body.grpc).toMatch(new RegExp(`^00-${PARENT_TRACE}-[0-9a-f]{16}-00$`));
    await flushTracing();
    expect(collector.spans).toEqual([]);
  });

  it('starts a new trace when the caller sent none or a malformed one', async () => {
    collector.spans.length = 0;
    await get('/hello/fresh', 'not-a-traceparent');
    await flushTracing();
    const spans = await collector.waitFor((s) => s.length >= 3);
    const [server] = byName(spans, 'GET /hello/:name');
    expect(server!.parentSpanId).toBe('');
    expect(new Set(spans.map((s) => s.traceId)).size).toBe(1);
    expect(server!.traceId).not.toBe(PARENT_TRACE);
  });
});
