import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { startFacade, startUpstream, table } from './helpers.ts';

const MB = 1024 * 1024;
const TOTAL = 50 * MB;

describe('large uploads', () => {
  it('streams a 50 MB upload to the upstream without buffering it', async () => {
    const received = { bytes: 0, firstByteAt: 0, hash: createHash('sha256') };
    const service = await startUpstream(
      'notification',
      (req, res) => {
        req.on('data', (chunk: Buffer) => {
          if (!received.bytes) received.firstByteAt = performance.now();
          received.bytes += chunk.length;
          received.hash.update(chunk);
          // A slightly slow reader, so backpressure has to reach the client.
          req.pause();
          setImmediate(() => req.resume());
        });
        req.on('end', () => {
          res.writeHead(201, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ bytes: received.bytes }));
        });
      },
      { bufferBody: false },
    );
    const monolith = await startUpstream('monolith');
    // An idempotent route with a fallback: the facade would buffer a small body for a replay,
    // so this also shows a large one (chunked, size unknown up front) is handed back to the stream.
    const f = await startFacade({
      replayBodyBytes: MB,
      routesText: table({
        upstreams: { monolith: { url: monolith.url }, notification: { url: service.url } },
        routes: [{ id: 'files.put', match: { method: 'PUT', path: '/files/:name' }, effects: 'idempotent', serve: 'notification' }],
        default: 'monolith',
      }),
    });

    // Bytes the client has handed over that the upstream has not received yet: with streaming and
    // backpressure it stays within the socket and stream buffers (about 12 MB measured on loopback,
    // where the kernel grows socket buffers); a proxy that buffered the body would let it reach 50 MB.
    let maxInTransit = 0;
    const sent = createHash('sha256');
    const block = randomBytes(64 * 1024);
    let finishedSendingAt = 0;
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${f.url}/files/big.bin`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      req.setTimeout(60_000, () => req.destroy(new Error('upload timed out')));
      req.on('error', reject);
      let written = 0;
      const pump = () => {
        while (written < TOTAL) {
          const chunk = Buffer.from(block);
          chunk.writeUInt32BE(written / block.length, 0); // every chunk differs
          written += chunk.length;
          maxInTransit = Math.max(maxInTransit, written - received.bytes);
          sent.update(chunk);
          if (!req.write(chunk)) return void req.once('drain', pump);
        }
        req.end(() => (finishedSendingAt = performance.now()));
      };
      pump();
    });

    expect(status).toBe(201);
    expect(received.bytes).toBe(TOTAL);
    expect(received.hash.digest('hex')).toBe(sent.digest('hex'));
    // The upstream was reading long before the client finished sending.
    expect(received.firstByteAt).toBeGreaterThan(0);
    expect(received.firstByteAt).toBeLessThan(finishedSendingAt);
    expect(maxInTransit).toBeLessThan(24 * MB);
    expect(monolith.requests).toHaveLength(0);
  }, 60_000);
});
