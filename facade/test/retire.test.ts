import http from 'node:http';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { request, startFacade, startUpstream, table, tempDir, waitFor } from './helpers.ts';

const routes = (url: string, timeoutMs: number) => table({ upstreams: { svc: { url, timeoutMs } }, default: 'svc' });

/** Uploads `pieces` x 128 KiB, one piece every 100 ms; resolves with the status and the body. */
function slowUpload(url: string, pieces: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    let sent = 0;
    const timer = setInterval(() => {
      req.write(Buffer.alloc(128 * 1024, sent));
      if (++sent === pieces) {
        clearInterval(timer);
        req.end();
      }
    }, 100);
  });
}

describe('upstreams changed by a reload', () => {
  it('let a long upload started on the old table finish, close idle sockets at once, and close the old upstream when its last request ends', async () => {
    const svc = await startUpstream('svc', (req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ bytes: req.body.length }));
    });
    const file = path.join(await tempDir(), 'routes.yaml');
    await writeFile(file, routes(svc.url, 5_000));
    const f = await startFacade({ routesFile: file, watch: false });
    const old = f.facade.table().upstreams.get('svc')!;
    expect((await request(`${f.url}/warm-up`)).status).toBe(200); // leaves an idle keep-alive socket in the pool
    expect(Object.values(old.proxy.agent.freeSockets).flat()).toHaveLength(1);

    const arrived = new Promise<void>((resolve) => svc.server.once('request', () => resolve()));
    const upload = slowUpload(`${f.url}/upload`, 16); // 2 MiB over 1.6 s
    await arrived;

    // The upstream's settings change: a new runtime; the old one is retired while the upload
    // still streams through it. However long it takes (past the old 60 s grace), it is not cut.
    await writeFile(file, routes(svc.url, 6_000));
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      expect(await f.facade.reload()).toMatchObject({ status: 'applied' });
      vi.advanceTimersByTime(10 * 60_000);
    } finally {
      vi.useRealTimers();
    }
    expect(f.facade.table().upstreams.get('svc')).not.toBe(old);
    expect(Object.values(old.proxy.agent.freeSockets).flat()).toHaveLength(0);
    expect(old.breaker.isShutdown).toBe(false);

    expect(await upload).toEqual({ status: 200, body: JSON.stringify({ bytes: 2 * 1024 * 1024 }) });
    await waitFor(() => old.breaker.isShutdown, 2_000, 'the retired upstream to close');
    expect(Object.values(old.proxy.agent.sockets).flat()).toHaveLength(0);
    expect((await request(`${f.url}/after`)).status).toBe(200);
  });

  it('closes a retired upstream at once when no request uses it', async () => {
    const svc = await startUpstream('svc');
    const file = path.join(await tempDir(), 'routes.yaml');
    await writeFile(file, routes(svc.url, 5_000));
    const f = await startFacade({ routesFile: file, watch: false });
    const old = f.facade.table().upstreams.get('svc')!;
    await writeFile(file, routes(svc.url, 6_000));
    await f.facade.reload();
    expect(old.breaker.isShutdown).toBe(true);
  });
});
