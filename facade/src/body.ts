import type { IncomingMessage } from 'node:http';

/** True when the request carries a body (framed by Content-Length > 0 or Transfer-Encoding). */
export function hasBody(req: IncomingMessage): boolean {
  const h = req.headers;
  if (h['transfer-encoding'] !== undefined) return true;
  const len = h['content-length'];
  return len !== undefined && len !== '0';
}

/**
 * Reads the whole request body when it fits in `limit` bytes, so it can be sent again (a fallback
 * replay, a shadow copy). A body declared larger than `limit` is not touched; a chunked body that
 * turns out larger is given back to the stream (`unshift`) so it still streams to the upstream
 * unbuffered. Resolves null in both cases: the request then streams and cannot be replayed.
 * Rejects when the client aborts mid-body.
 */
export function readBodyBounded(req: IncomingMessage, limit: number): Promise<Buffer | null> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      chunks.push(chunk);
      if (size > limit) {
        cleanup();
        req.pause();
        req.unshift(Buffer.concat(chunks));
        resolve(null);
      }
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onClose = () => {
      if (!req.complete) onError(Object.assign(new Error('client aborted the request body'), { code: 'ECLIENTGONE' }));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}
