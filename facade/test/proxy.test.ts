import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { gzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { json, request, startFacade, startUpstream, table, type TestFacade, type Upstream } from './helpers.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('transparent proxying', () => {
  let monolith: Upstream;
  let f: TestFacade;
  const big = randomBytes(3 * 1024 * 1024).toString('base64'); // ~4 MiB of text
  const bigGzip = gzipSync(big);

  beforeAll(async () => {
    monolith = await startUpstream('monolith', (req, res) => {
      const url = new URL(req.url!, 'http://x');
      switch (url.pathname) {
        case '/redirect':
          res.writeHead(302, { location: 'https://elsewhere.example/login?next=%2Fa', 'set-cookie': ['a=1; Path=/; HttpOnly', 'b=2; Path=/api; Secure'] });
          return void res.end();
        case '/teapot':
          res.writeHead(418, "I'm a teapot", { 'x-custom': 'yes', 'cache-control': 'no-store', etag: '"v1"' });
          return void res.end('short and stout');
        case '/gzip-chunked': {
          res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip' });
          // Written in small pieces without content-length: the response is chunked.
          for (let i = 0; i < bigGzip.length; i += 64 * 1024) res.write(bigGzip.subarray(i, i + 64 * 1024));
          return void res.end();
        }
        case '/hop':
          res.writeHead(200, {
            connection: 'x-upstream-secret',
            'x-upstream-secret': 'hop',
            'keep-alive': 'timeout=5',
            'proxy-authenticate': 'Basic',
            upgrade: 'h2c',
            'x-end-to-end': 'kept',
          });
          return void res.end('ok');
        case '/echo':
        default:
          res.setHeader('content-type', 'application/json');
          return void res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: req.body.toString('base64') }));
      }
    });
    f = await startFacade({
      routesText: table({
        upstreams: { monolith: { url: monolith.url } },
        routes: [{ id: 'echo', match: { method: '*', path: '/echo' }, effects: 'unsafe', serve: 'monolith' }],
        default: 'monolith',
      }),
    });
  });

  it('passes the status, reason, headers, cookies and redirect Location through unchanged', async () => {
    const redirect = await request(`${f.url}/redirect`);
    expect(redirect.status).toBe(302);
    expect(redirect.headers.location).toBe('https://elsewhere.example/login?next=%2Fa');
    expect(redirect.headers['set-cookie']).toEqual(['a=1; Path=/; HttpOnly', 'b=2; Path=/api; Secure']);

    const teapot = await new Promise<http.IncomingMessage & { text: string }>((resolve, reject) => {
      http.get(`${f.url}/teapot`, { agent: false }, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve(Object.assign(res, { text })));
      }).on('error', reject);
    });
    expect([teapot.statusCode, teapot.statusMessage, teapot.text]).toEqual([418, "I'm a teapot", 'short and stout']);
    expect(teapot.headers).toMatchObject({ 'x-custom': 'yes', 'cache-control': 'no-store', etag: '"v1"' });
  });

  it('passes a compressed, chunked body of several MiB through byte for byte', async () => {
    const res = await request(`${f.url}/gzip-chunked`, { headers: { 'accept-encoding': 'gzip' } });
    expect(res.status).toBe(200);
    expect(res.headers['content-encoding']).toBe('gzip');
    expect(res.headers['transfer-encoding']).toBe('chunked');
    expect(sha(res.body)).toBe(sha(bigGzip));
  });

  it('sends every method, the query string and JSON, form and multipart bodies to the upstream unchanged', async () => {
    const boundary = '----strangler1234';
    const multipart = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n`),
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`),
      randomBytes(200_000),
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
    const cases: Array<{ method: string; type?: string; body?: Buffer }> = [
      { method: 'GET' },
      { method: 'DELETE' },
      { method: 'OPTIONS' },
      { method: 'POST', type: 'application/json', body: Buffer.from(JSON.stringify({ userId: 'u1', channel: 'email', data: { ü: '€' } })) },
      { method: 'PUT', type: 'application/x-www-form-urlencoded', body: Buffer.from('a=1&b=two+words&c=%E2%82%AC') },
      { method: 'PATCH', type: `multipart/form-data; boundary=${boundary}`, body: multipart },
    ];
    for (const c of cases) {
      const url = `${f.url}/echo?limit=10&cursor=a%2Fb&flag&x=1&x=2`;
      const headers = c.type ? { 'content-type': c.type } : {};
      const res = await request(url, { method: c.method, headers, body: c.body });
      expect(res.status, c.method).toBe(200);
      const seen = monolith.requests.at(-1)!;
      expect(seen.method).toBe(c.method);
      expect(seen.url).toBe('/echo?limit=10&cursor=a%2Fb&flag&x=1&x=2');
      if (c.type) expect(seen.headers['content-type']).toBe(c.type);
      expect(sha(seen.body)).toBe(sha(c.body ?? Buffer.alloc(0)));
    }
    const head = await request(`${f.url}/echo`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(monolith.requests.at(-1)!.method).toBe('HEAD');
  });

  it('sets X-Forwarded-*, keeps a sane x-request-id, generates one when absent and passes traceparent on', async () => {
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const res = await request(`${f.url}/echo`, { headers: { 'x-request-id': 'req-123', traceparent, 'x-forwarded-for': '203.0.113.7', 'x-forwarded-host': 'spoofed.example', host: 'shop.example:8080' } });
    const seen = monolith.requests.at(-1)!.headers;
    expect(seen['x-request-id']).toBe('req-123');
    expect(seen.traceparent).toBe(traceparent);
    expect(seen['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
    expect(seen['x-forwarded-proto']).toBe('http');
    expect(seen['x-forwarded-host']).toBe('shop.example:8080');
    expect(seen.host).toBe('shop.example:8080');
    expect(res.headers['x-request-id']).toBe('req-123');

    await request(`${f.url}/echo`, { headers: { 'x-request-id': 'not a sane id; has spaces' } });
    const generated = monolith.requests.at(-1)!.headers['x-request-id'];
    expect(generated).toMatch(/^[0-9a-f-]{36}$/);
    await request(`${f.url}/echo`);
    expect(monolith.requests.at(-1)!.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(monolith.requests.at(-1)!.headers['x-request-id']).not.toBe(generated);
  });

  it('removes hop-by-hop headers in both directions and keeps end-to-end ones', async () => {
    await request(`${f.url}/echo`, {
      headers: { connection: 'keep-alive, x-client-hop', 'x-client-hop': 'secret', 'keep-alive': 'timeout=1', te: 'trailers', 'proxy-authorization': 'Basic abc', 'x-end-to-end': 'kept' },
    });
    const seen = monolith.requests.at(-1)!.headers;
    for (const h of ['x-client-hop', 'keep-alive', 'te', 'proxy-authorization']) expect(seen[h], h).toBeUndefined();
    expect(seen.connection ?? 'keep-alive').toBe('keep-alive'); // only the facade's own connection semantics
    expect(seen['x-end-to-end']).toBe('kept');

    const res = await request(`${f.url}/hop`);
    for (const h of ['x-upstream-secret', 'keep-alive', 'proxy-authenticate', 'upgrade']) expect(res.headers[h], h).toBeUndefined();
    expect(res.headers.connection).not.toBe('x-upstream-secret');
    expect(res.body.toString()).toBe('ok');
  });

  it('strips spoofed x-strangler-* headers, so a client can neither ask for a dry run nor force a side', async () => {
    await request(`${f.url}/echo`, { method: 'POST', headers: { 'x-strangler-dry-run': '1', 'X-Strangler-Side': 'canary', 'x-strangler-admin-token': 'guess', 'x-strangler-anything': 'x' }, body: '{}' });
    const seen = monolith.requests.at(-1)!;
    expect(Object.keys(seen.headers).filter((h) => h.startsWith('x-strangler-'))).toEqual([]);
    expect(seen.rawHeaders.filter((h) => /^x-strangler-/i.test(h))).toEqual([]);
  });

  it('keeps connections to the upstream alive across requests', async () => {
    const sockets = new Set<unknown>();
    const onRequest = (req: http.IncomingMessage) => sockets.add(req.socket);
    monolith.server.on('request', onRequest);
    try {
      for (let i = 0; i < 20; i++) expect((await request(`${f.url}/echo`)).status).toBe(200);
    } finally {
      monolith.server.off('request', onRequest);
    }
    expect(sockets.size).toBe(1);
  });

  it('answers its own health and readiness under /__strangler/, naming no route or upstream, and never proxies them', async () => {
    const before = monolith.requests.length;
    expect(json(await request(`${f.url}/__strangler/healthz`))).toEqual({ status: 'ok' });
    expect(json(await request(`${f.url}/__strangler/readyz`))).toEqual({ status: 'ready' });
    // Metrics name routes and upstreams: they are on the admin or metrics port, not here.
    const metrics = await request(`${f.url}/__strangler/metrics`);
    expect(metrics.status).toBe(404);
    expect(metrics.body.toString()).not.toContain('strangler_facade');
    expect((await request(`${f.url}/__strangler/anything`)).status).toBe(404);
    expect(monolith.requests.length).toBe(before);
  });
});

describe('upstream failures', () => {
  it('answers 502 with a coded JSON error when the upstream refuses connections', async () => {
    const gone = await startUpstream('gone');
    await gone.running.close(0);
    const f = await startFacade({ routesText: table({ upstreams: { monolith: { url: gone.url } }, default: 'monolith' }) });
    const res = await request(`${f.url}/anything`, { headers: { 'x-request-id': 'abc' } });
    expect(res.status).toBe(502);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(json(res)).toEqual({ error: { code: 'UPSTREAM_UNREACHABLE', message: expect.any(String), details: { upstream: 'monolith', route: null, requestId: 'abc' } } });
  });
});
