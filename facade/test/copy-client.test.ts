import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { CopyClient, type CopyExchange } from '../src/shadow/copy-client.ts';
import { startUpstream, teardown } from './helpers.ts';

/** A raw TCP server answering each request (read up to its blank line) with the next canned reply. */
async function rawServer(reply: (head: string) => string | Buffer | null) {
  const connections: net.Socket[] = [];
  const server = net.createServer((socket) => {
    connections.push(socket);
    let buf = '';
    socket.on('data', (c) => {
      buf += c.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const out = reply(head);
        if (out === null) continue; // never answer
        socket.write(out);
        if (/connection: close/i.test(out.toString())) socket.end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  teardown(() => {
    for (const s of connections) s.destroy();
    return new Promise((r) => server.close(r));
  });
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, connections };
}

function client(url: string, idleSocketMs = 4_000) {
  const c = new CopyClient(new URL(url), { idleSocketMs }, () => Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' }));
  teardown(() => c.close());
  return c;
}

const get = (url: string, path: string, extra: Partial<CopyExchange> = {}): CopyExchange => ({
  method: 'GET',
  path,
  headers: ['host', new URL(url).host],
  body: Buffer.alloc(0),
  maxBytes: 1024,
  timeoutMs: 2_000,
  ...extra,
});

describe('shadow copy client', () => {
  it('reads every response framing and reuses one kept-alive connection for them', async () => {
    const replies: Record<string, string> = {
      '/length': 'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"a":"bcd"}',
      '/chunked': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;ext=1\r\n{"a"\r\n7\r\n:"bcd"}\r\n0\r\nx-trailer: t\r\n\r\n',
      '/interim': 'HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok',
      '/empty': 'HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n',
      '/head': 'HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n',
    };
    const up = await rawServer((head) => replies[head.split(' ')[1]!]!);
    const c = client(up.url);
    const length = await c.send(get(up.url, '/length'));
    expect(length).toMatchObject({ status: 200, headers: { 'content-type': 'application/json', 'content-length': '11' } });
    expect(length.body!.toString()).toBe('{"a":"bcd"}');
    const chunked = await c.send(get(up.url, '/chunked'));
    expect(chunked.body!.toString()).toBe('{"a":"bcd"}');
    const interim = await c.send(get(up.url, '/interim'));
    expect(interim.status).toBe(201);
    expect(interim.headers.link).toBeUndefined();
    expect(interim.body!.toString()).toBe('ok');
    expect(await c.send(get(up.url, '/empty'))).toMatchObject({ status: 204, body: Buffer.alloc(0) });
    expect(await c.send(get(up.url, '/head', { method: 'HEAD' }))).toMatchObject({ status: 200, body: Buffer.alloc(0) });
    // Still in step after all of them: the next answer is the right one, on the same connection.
    expect((await c.send(get(up.url, '/length'))).body!.toString()).toBe('{"a":"bcd"}');
    expect(up.connections).toHaveLength(1);
  });

  it('reads a body delimited by the connection closing, and does not reuse that connection', async () => {
    const up = await rawServer(() => 'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end');
    const c = client(up.url);
    expect((await c.send(get(up.url, '/'))).body!.toString()).toBe('until the end');
    expect((await c.send(get(up.url, '/'))).body!.toString()).toBe('until the end');
    expect(up.connections).toHaveLength(2);
  });

  it('combines duplicate response headers as node:http does, so both sides compare alike', async () => {
    const up = await rawServer(
      () => 'HTTP/1.1 200 OK\r\nx-list: a\r\nx-list: b\r\ncontent-type: text/plain\r\ncontent-type: text/html\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nX-Mixed-Case:  v \r\ncontent-length: 0\r\n\r\n',
    );
    const viaNode = await new Promise<http.IncomingHttpHeaders>((resolve, reject) => {
      http.get(`${up.url}/`, { agent: false }, (res) => resolve(res.resume().headers)).on('error', reject);
    });
    const mine = await client(up.url).send(get(up.url, '/'));
    expect(mine.headers).toEqual(viaNode);
  });

  it('sends the method, path, headers and body as given', async () => {
    const up = await startUpstream('svc', (req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ method: req.method, url: req.url, body: req.body.toString(), shadow: req.headers['x-strangler-shadow'] }));
    });
    const body = Buffer.from(JSON.stringify({ n: 1, text: 'é' }));
    const res = await client(up.url).send(
      get(up.url, '/api/x?y=1', { method: 'POST', headers: ['host', 'example.test', 'content-length', String(body.length), 'x-strangler-shadow', '1'], body }),
    );
    expect(JSON.parse(res.body!.toString())).toEqual({ method: 'POST', url: '/api/x?y=1', body: body.toString(), shadow: '1' });
    expect(up.requests[0]!.headers.host).toBe('example.test');
  });

  it('answers a body over the bound with a null body and rejects a 5xx with the answer attached', async () => {
    const up = await rawServer((head) =>
      head.startsWith('GET /big') ? `HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n${'x'.repeat(2000)}` : 'HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy',
    );
    const c = client(up.url);
    expect(await c.send(get(up.url, '/big'))).toMatchObject({ status: 200, body: null });
    await expect(c.send(get(up.url, '/fail'))).rejects.toMatchObject({ code: 'EUPSTREAM_STATUS', status: 503, captured: { status: 503, body: Buffer.from('busy') } });
  });

  it('fails on a silent upstream after the idle timeout, on a refused connection, and on a malformed answer', async () => {
    const silent = await rawServer(() => null);
    await expect(client(silent.url).send(get(silent.url, '/', { timeoutMs: 100 }))).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    const free = net.createServer();
    await new Promise<void>((r) => free.listen(0, '127.0.0.1', r));
    const freePort = (free.address() as net.AddressInfo).port;
    await new Promise((r) => free.close(r));
    await expect(client(`http://127.0.0.1:${freePort}`).send(get(`http://127.0.0.1:${freePort}`, '/'))).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const garbage = await rawServer(() => 'SMTP ready\r\n\r\n');
    await expect(client(garbage.url).send(get(garbage.url, '/'))).rejects.toMatchObject({ code: 'EPARSE' });
  });

  it('closes idle connections after idleSocketMs and when retired', async () => {
    const up = await rawServer(() => 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    const c = client(up.url, 100);
    await c.send(get(up.url, '/'));
    await new Promise((r) => setTimeout(r, 300));
    expect(up.connections[0]!.destroyed || up.connections[0]!.readableEnded).toBe(true);
    await c.send(get(up.url, '/'));
    expect(up.connections).toHaveLength(2);
    c.retire();
    await new Promise((r) => setTimeout(r, 50));
    expect(up.connections[1]!.destroyed || up.connections[1]!.readableEnded).toBe(true);
  });
});
