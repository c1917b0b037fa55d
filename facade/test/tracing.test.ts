import { afterAll, describe, expect, it } from 'vitest';
import { createLogger, flushTracing, startTracing, stopTracing } from '@strangler/platform';
import { startOtlpCollector } from '@strangler/platform/testing';
import { request, startFacade, startUpstream, table } from './helpers.ts';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CLIENT_SPAN = '00f067aa0ba902b7';

const collector = await startOtlpCollector();
startTracing('facade', createLogger('facade-tracing-test'), { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url });
afterAll(() => stopTracing());

const monolith = await startUpstream('monolith');
const service = await startUpstream('service', (_req, res) => {
  res.writeHead(503, { 'content-type': 'application/json' });
  res.end('{"error":{"code":"DOWN"}}');
});
const f = await startFacade({
  routesText: table({
    upstreams: { monolith: { url: monolith.url }, service: { url: service.url } },
    routes: [
      { id: 'orders.get', match: { method: 'GET', path: '/api/orders/:id' }, effects: 'read', serve: 'monolith' },
      { id: 'orders.cancel', match: { method: 'POST', path: '/api/orders/:id/cancel' }, effects: 'unsafe', serve: 'service' },
    ],
    default: 'monolith',
  }),
});

describe('facade tracing', () => {
  it('exports a span per request named by route, and hands the upstream its id in place of the client\'s', async () => {
    const res = await request(`${f.url}/api/orders/42?x=1`, { headers: { traceparent: `00-${TRACE}-${CLIENT_SPAN}-01` } });
    expect(res.status).toBe(200);
    await flushTracing();
    const [span] = await collector.waitFor((s) => s.some((x) => x.name === 'GET orders.get'));
    expect(span).toMatchObject({ service: 'facade', name: 'GET orders.get', kind: 2, traceId: TRACE, parentSpanId: CLIENT_SPAN, status: 0 });
    expect(span!.attributes).toMatchObject({ 'http.request.method': 'GET', 'url.path': '/api/orders/42', 'strangler.route': 'orders.get', 'strangler.serve': 'monolith', 'strangler.answered_by': 'monolith', 'http.response.status_code': 200 });
    expect(monolith.requests.at(-1)!.headers.traceparent).toBe(`00-${TRACE}-${span!.spanId}-01`);
  });

  it('fails the span of a request answered with a 5xx', async () => {
    collector.spans.length = 0;
    const res = await request(`${f.url}/api/orders/42/cancel`, { method: 'POST' });
    expect(res.status).toBe(503);
    await flushTracing();
    const [span] = await collector.waitFor((s) => s.length >= 1);
    expect(span).toMatchObject({ name: 'POST orders.cancel', status: 2, parentSpanId: '' });
    expect(span!.attributes).toMatchObject({ 'strangler.serve': 'service', 'http.response.status_code': 503 });
    expect(service.requests.at(-1)!.headers.traceparent).toBe(`00-${span!.traceId}-${span!.spanId}-01`);
  });
});
