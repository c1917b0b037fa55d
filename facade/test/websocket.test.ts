import type { IncomingMessage } from 'node:http';
import { beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { createLogger } from '@strangler/platform';
import { createFacade, listenFacade } from '../src/index.ts';
import { startFacade, startUpstream, table, teardown, type TestFacade, type Upstream } from './helpers.ts';

/** An upstream that answers HTTP and echoes WebSocket messages prefixed with its name. */
async function wsUpstream(name: string) {
  const up = await startUpstream(name);
  const wss = new WebSocketServer({ server: up.server });
  const handshakes: IncomingMessage[] = [];
  wss.on('connection', (socket, req) => {
    handshakes.push(req);
    socket.on('message', (data) => socket.send(`${name}:${data.toString()}`));
  });
  teardown(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
  });
  return Object.assign(up, { handshakes, wss });
}

function connect(url: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, handshakeTimeout: 3_000 });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`status ${res.statusCode}`), { status: res.statusCode })));
  });
}

const roundTrip = (ws: WebSocket, text: string) =>
  new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no echo within 3 s')), 3_000);
    ws.once('message', (data) => {
      clearTimeout(timer);
      resolve(data.toString());
    });
    ws.send(text);
  });

describe('WebSocket upgrades', () => {
  let monolith: Upstream & { handshakes: IncomingMessage[] };
  let notification: Upstream & { handshakes: IncomingMessage[] };
  let f: TestFacade;

  beforeAll(async () => {
    monolith = await wsUpstream('monolith');
    notification = await wsUpstream('notification');
    f = await startFacade({
      routesText: table({
        upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url } },
        routes: [{ id: 'notifications.live', match: { method: 'GET', path: '/api/notifications/live' }, effects: 'read', serve: 'notification' }],
        default: 'monolith',
      }),
    });
  });

  it('proxies a WebSocket to the upstream its route names, in both directions, with clean headers', async () => {
    const ws = await connect(`${f.url.replace('http', 'ws')}/api/notifications/live?since=5`, { 'x-strangler-dry-run': '1', 'x-request-id': 'ws-1' });
    try {
      expect(await roundTrip(ws, 'hello')).toBe('notification:hello');
      expect(await roundTrip(ws, 'x'.repeat(100_000))).toBe(`notification:${'x'.repeat(100_000)}`);
    } finally {
      ws.close();
    }
    const hs = notification.handshakes.at(-1)!;
    expect(hs.url).toBe('/api/notifications/live?since=5');
    expect(hs.headers['x-strangler-dry-run']).toBeUndefined();
    expect(hs.headers['x-request-id']).toBe('ws-1');
    expect(hs.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(hs.headers['x-forwarded-proto']).toBe('ws');
  });

  it('sends unmatched WebSockets to the default upstream', async () => {
    const ws = await connect(`${f.url.replace('http', 'ws')}/socket`);
    try {
      expect(await roundTrip(ws, 'hi')).toBe('monolith:hi');
    } finally {
      ws.close();
    }
  });

  it('sends a WebSocket to the fallback while the breaker is open, and refuses it with 503 where there is none', async () => {
    const breakers = f.facade.table().upstreams;
    breakers.get('notification')!.breaker.open();
    try {
      const ws = await connect(`${f.url.replace('http', 'ws')}/api/notifications/live`);
      expect(await roundTrip(ws, 'x')).toBe('monolith:x');
      ws.close();
      breakers.get('monolith')!.breaker.open();
      await expect(connect(`${f.url.replace('http', 'ws')}/socket`)).rejects.toMatchObject({ status: 503 });
    } finally {
      breakers.get('notification')!.breaker.close();
      breakers.get('monolith')!.breaker.close();
    }
  });
});

describe('shutdown with WebSockets open', () => {
  it('closes the WebSockets still open when the grace period is over, and finishes closing', async () => {
    const up = await wsUpstream('monolith');
    const facade = await createFacade({ routesText: table({ upstreams: { monolith: { url: up.url } }, default: 'monolith' }), logger: createLogger('ws-shutdown-test', 'silent') });
    const running = await listenFacade(facade, { port: 0 });
    teardown(() => running.close(0));
    const ws = await connect(`${running.main.url.replace('http', 'ws')}/live`);
    expect(await roundTrip(ws, 'hi')).toBe('monolith:hi');
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    const upstreamSide = [...up.wss.clients][0]!;
    const upstreamClosed = new Promise<void>((resolve) => upstreamSide.once('close', () => resolve()));
    const started = performance.now();
    await running.close(300);
    expect(performance.now() - started).toBeLessThan(3_000);
    expect(await closed).toBe(1006); // dropped, not closed by a handshake: the client reconnects elsewhere
    // The upstream's side is closed too, not left open until it times out.
    await Promise.race([upstreamClosed, new Promise((_, reject) => setTimeout(() => reject(new Error('the upstream side of the WebSocket is still open after 3 s')), 3_000))]);
  });
});
