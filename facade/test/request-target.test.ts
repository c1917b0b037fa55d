import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { startFacade, startUpstream, table } from './helpers.ts';

// Requests a client can write but a plain HTTP client library would not: sent byte for byte.
function raw(port: number, text: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(text));
    let out = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (out += d));
    socket.on('close', () => resolve(out));
    socket.on('error', reject);
    // Keep-alive connections stay open: end once a whole response is in.
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on('close', () => clearTimeout(timer));
    socket.on('data', () => {
      const m = /content-length: (\d+)\r\n[\s\S]*?\r\n\r\n([\s\S]*)$/i.exec(out);
      if (m && Buffer.byteLength(m[2]!) >= Number(m[1])) socket.end();
    });
  });
}
const statusLine = (response: string) => response.split('\r\n')[0];

const monolith = await startUpstream('monolith');
const service = await startUpstream('service');
const f = await startFacade({
  routesText: table({
    upstreams: { monolith: { url: monolith.url }, service: { url: service.url } },
    routes: [
      { id: 'notifications.get', match: { method: 'GET', path: '/api/notifications/:id' }, effects: 'read', serve: 'service' },
      { id: 'notifications.send', match: { method: 'POST', path: '/api/notifications' }, effects: 'unsafe', serve: 'service' },
    ],
    default: 'monolith',
  }),
});
const port = f.running.port;
const seen = () => [...monolith.requests.map((r) => `monolith ${r.method} ${r.url}`), ...service.requests.map((r) => `service ${r.method} ${r.url}`)];
const reset = () => {
  monolith.requests.length = 0;
  service.requests.length = 0;
};

describe('request targets and framing', () => {
  it('refuses a request whose Connection header names a framing header, forwarding nothing (request smuggling)', async () => {
    reset();
    const smuggled = 'POST /api/notifications HTTP/1.1\r\nHost: x\r\nX-Strangler-Dry-Run: 1\r\nContent-Length: 2\r\n\r\n{}';
    for (const header of ['content-length', 'Transfer-Encoding']) {
      const framing = header === 'content-length' ? `Content-Length: ${smuggled.length}` : 'Transfer-Encoding: chunked';
      const body = header === 'content-length' ? smuggled : `${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`;
      const response = await raw(port, `GET /anything HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, ${header}\r\n${framing}\r\n\r\n${body}`);
      expect(statusLine(response)).toBe('HTTP/1.1 400 Bad Request');
      expect(response).toContain(`"code":"BAD_REQUEST_HEADERS"`);
      expect(response).toContain(`names ${header.toLowerCase()}, which frames the request`);
    }
    expect(seen()).toEqual([]);
  });

  it('keeps the headers it sets itself when the client names them in Connection', async () => {
    reset();
    const response = await raw(port, 'GET /kept HTTP/1.1\r\nHost: x\r\nConnection: close, x-forwarded-for, x-request-id\r\nX-Forwarded-For: 10.9.9.9\r\nX-Custom: y\r\n\r\n');
    expect(statusLine(response)).toBe('HTTP/1.1 200 OK');
    const { headers } = monolith.requests.at(-1)!;
    expect(headers['x-forwarded-for']).toBe('10.9.9.9, 127.0.0.1');
    expect(headers['x-request-id']).toMatch(/^[\w-]+$/);
  });

  it('routes an absolute-form target by its path, as an origin-form one', async () => {
    reset();
    const response = await raw(port, 'GET http://127.0.0.1/api/notifications/7?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    expect(statusLine(response)).toBe('HTTP/1.1 200 OK');
    expect(seen()).toEqual(['service GET /api/notifications/7?x=1']);
  });

  it('answers OPTIONS * itself, and refuses other targets that are not paths, without touching a breaker', async () => {
    reset();
    const breaker = f.facade.table().upstreams.get('monolith')!.breaker;
    const { fires, failures } = breaker.stats;
    for (let i = 0; i < 12; i++) expect(statusLine(await raw(port, 'OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'))).toBe('HTTP/1.1 204 No Content');
    for (let i = 0; i < 12; i++) {
      const response = await raw(port, 'GET ftp://example.com/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      expect(statusLine(response)).toBe('HTTP/1.1 400 Bad Request');
      expect(response).toContain('"code":"BAD_REQUEST_TARGET"');
    }
    expect(seen()).toEqual([]);
    expect(breaker.stats).toMatchObject({ fires, failures });
    expect(breaker.opened).toBe(false);
    expect(statusLine(await raw(port, 'GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'))).toBe('HTTP/1.1 200 OK');
  });

  it('answers a request asking to upgrade to h2c as plain HTTP/1.1, and refuses one with a body', async () => {
    reset();
    const h2c = 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n';
    const served = async () => Number(/strangler_facade_requests_total\{route="notifications\.get",upstream="service",side="serve",code="200"[^}]*\} (\d+)/.exec(await f.facade.metrics.registry.metrics())?.[1] ?? 0);
    const servedBefore = await served();
    const get = await raw(port, `GET /api/notifications/9 HTTP/1.1\r\nHost: x\r\n${h2c}\r\n`);
    expect(statusLine(get)).toBe('HTTP/1.1 200 OK');
    expect(get).toContain('"upstream":"service"');
    // Recorded and released like any request: counted once, and the in-flight gauge back at 0.
    const metrics = await f.facade.metrics.registry.metrics();
    expect(metrics).toMatch(/strangler_facade_inflight_requests(\{[^}]*\})? 0\n/);
    expect(await served()).toBe(servedBefore + 1);
    const forwarded = service.requests.at(-1)!.headers;
    expect(forwarded).not.toHaveProperty('upgrade');
    expect(forwarded).not.toHaveProperty('http2-settings');
    const post = await raw(port, `POST /api/notifications HTTP/1.1\r\nHost: x\r\n${h2c}Content-Length: 2\r\n\r\n{}`);
    expect(statusLine(post)).toBe('HTTP/1.1 400 Bad Request');
    expect(post).toContain('does not switch to \\"h2c\\"; send the request without the Upgrade header');
    expect(seen()).toEqual(['service GET /api/notifications/9']);
  });
});
