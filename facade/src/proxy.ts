import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { parse as parseUrl } from 'node:url';
import { createProxyMiddleware, debugProxyErrorsPlugin, proxyEventsPlugin, type RequestHandler } from 'http-proxy-middleware';
import { CLIENT_GONE, type StatusOutcome } from './breakers.ts';
import { stripResponseHopByHop } from './headers.ts';
import { CopyClient } from './shadow/copy-client.ts';
import { REQUEST_ID_HEADER } from '@strangler/platform';

/**
 * The adapter around http-proxy-middleware 3: one proxy per upstream, each with its own
 * keep-alive agent, turning its events into a promise per attempt.
 *
 * Invariants: bodies stream through untouched (the request is piped, never parsed), except a
 * body the facade buffered for a possible replay, which is written whole; the client's request
 * headers were cleaned beforehand (headers.ts) and hop-by-hop ones are removed from the outgoing
 * request here; the upstream's hop-by-hop response headers never reach the client.
 *
 * Failure modes, and what http-proxy does not do by itself:
 * - An attempt records whether the upstream socket ever connected (`reached`): a request that
 *   never connected was never seen by the upstream and may go elsewhere whatever its effects.
 * - A client that hangs up after sending its request does not abort http-proxy's outgoing
 *   request (it only listens for `aborted` on the request, which a completed request never
 *   emits): the facade aborts it (`Attempt.abort`) when the response closes early.
 * - An upstream that resets after the response started leaves the client response open forever
 *   (the pipe never ends): the client response is destroyed so the client sees the failure.
 * - The logger plugin is ejected: with the default no-op logger it still builds a URL per
 *   response. The debug-errors plugin stays: it keeps socket errors from crashing the process.
 */

export interface Attempt {
  readonly upstream: string;
  /** Hop-by-hop headers to leave out of the outgoing request. */
  readonly strip: string[] | null;
  /** A buffered body to write (the request stream has already been read), or null to pipe it. */
  readonly body: Buffer | null;
  readonly requestId: string;
  /** Called with the upstream response before it is copied to the client. */
  readonly onResponse: ((proxyRes: IncomingMessage) => void) | null;
  /** The upstream socket connected: the request may have been received. */
  reached: boolean;
  settled: boolean;
  aborted: boolean;
  proxyReq: ClientRequest | null;
  resolve: ((status: number) => void) | null;
  reject: ((err: unknown) => void) | null;
}

export const ATTEMPT = Symbol('strangler.attempt');
type WithAttempt = IncomingMessage & { [ATTEMPT]?: Attempt };

export function newAttempt(upstream: string, requestId: string, strip: string[] | null, body: Buffer | null, onResponse: Attempt['onResponse'] = null): Attempt {
  return { upstream, strip, body, requestId, onResponse, reached: false, settled: false, aborted: false, proxyReq: null, resolve: null, reject: null };
}

/** Settles an attempt as failed (once); later events for it are ignored. */
export function failAttempt(a: Attempt, err: unknown): void {
  if (a.settled) return;
  a.settled = true;
  a.reject?.(err);
}

/** Stops an attempt: destroys its outgoing request (now or as soon as it exists). */
export function abortAttempt(a: Attempt): void {
  a.aborted = true;
  a.settled = true;
  a.proxyReq?.destroy();
}

export interface UpstreamProxyOptions {
  name: string;
  url: string;
  /**
   * The attempt fails with ETIMEDOUT (504, a breaker failure) when its socket stays idle this long
   * before the response headers arrive: a slow connect, an upload the upstream stops reading, or
   * an upstream that does not answer. Idle rather than total time, so a long upload that keeps
   * moving is never cut off; cleared once the headers arrive, so long-lived responses (SSE) stream.
   */
  timeoutMs: number;
  /** Idle keep-alive sockets are closed after this long; keep it below the upstream's keep-alive timeout (Node's default is 5 s). */
  idleSocketMs?: number;
}

export interface UpstreamProxy {
  readonly name: string;
  readonly agent: http.Agent;
  /** The upstream's origin and path prefix, for requests the facade makes itself (shadow copies). */
  readonly target: URL;
  /** The target's path without a trailing slash ('' for the root), prepended to request paths. */
  readonly pathPrefix: string;
  /** The client for shadow copies (and noise probes) sent to this upstream, with its own keep-alive pool. */
  readonly copies: CopyClient;
  /**
   * Sends `req` to the upstream and pipes the answer to `res`. Resolves with the status when the
   * response headers arrive and the status is < 400; rejects with a StatusOutcome for >= 400
   * (still piped to the client) or with the transport error (nothing sent to the client).
   */
  forward(req: IncomingMessage, res: ServerResponse, attempt: Attempt): Promise<number>;
  /** Proxies a WebSocket upgrade; on failure answers 502 on the raw socket. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Stops pooling: idle sockets are destroyed now, sockets in use when their exchange ends. */
  retire(): void;
  /** Destroys every socket of the agent. */
  close(): void;
}

export function createUpstreamProxy({ name, url, timeoutMs, idleSocketMs = 4_000 }: UpstreamProxyOptions): UpstreamProxy {
  const target = new URL(url);
  const secure = target.protocol === 'https:';
  // maxSockets stays unlimited: a queued request would get its socket after http-proxy ended the
  // piped (already consumed) request stream, too late to write a buffered body first.
  const agentOptions = { keepAlive: true, maxFreeSockets: 256, timeout: idleSocketMs, scheduling: 'lifo' as const };
  const agent = secure ? new https.Agent(agentOptions) : new http.Agent(agentOptions);

  const copies = new CopyClient(target, { idleSocketMs }, () => timeoutError(name, timeoutMs));
  const upgraded = new WeakSet<Duplex>();
  // One timeout listener per upstream rather than a closure per request; `this` is the outgoing request.
  function onIdleTimeout(this: ClientRequest) {
    this.destroy(timeoutError(name, timeoutMs));
  }
  const middleware: RequestHandler<IncomingMessage, ServerResponse> = createProxyMiddleware<IncomingMessage, ServerResponse>({
    target: parseUrl(url),
    agent,
    xfwd: false,
    changeOrigin: false,
    ejectPlugins: true,
    plugins: [debugProxyErrorsPlugin, proxyEventsPlugin],
    on: {
      proxyReq(proxyReq, req) {
        const a = (req as WithAttempt)[ATTEMPT];
        if (!a || a.upstream !== name) return;
        a.proxyReq = proxyReq;
        if (a.aborted) {
          proxyReq.destroy();
          return;
        }
        if (a.strip) for (const h of a.strip) proxyReq.removeHeader(h);
        proxyReq.setTimeout(timeoutMs, onIdleTimeout);
        const socket = proxyReq.socket;
        if (socket && !socket.connecting) a.reached = true;
        else socket?.once('connect', () => (a.reached = true));
        if (a.body && a.body.length) {
          if (proxyReq.writableEnded) proxyReq.destroy(Object.assign(new Error('buffered body could not be written before the request ended'), { code: 'EBODYREPLAY' }));
          else proxyReq.write(a.body);
        }
      },
      proxyRes(proxyRes, req, res) {
        const a = (req as WithAttempt)[ATTEMPT];
        if (!a || a.upstream !== name) return;
        a.proxyReq?.setTimeout(0);
        stripResponseHopByHop(proxyRes.headers);
        if (proxyRes.headers[REQUEST_ID_HEADER] === undefined) proxyRes.headers[REQUEST_ID_HEADER] = a.requestId;
        // A stream emits 'close' once: `on` spares once()'s per-request wrapper.
        proxyRes.on('close', () => {
          if (!proxyRes.complete && !res.writableEnded) res.destroy();
        });
        if (a.settled) return;
        a.onResponse?.(proxyRes);
        a.settled = true;
        const status = proxyRes.statusCode ?? 502;
        if (status < 400) a.resolve?.(status);
        else a.reject?.({ code: 'EUPSTREAM_STATUS', status } satisfies StatusOutcome);
      },
      proxyReqWs(proxyReq, req, socket) {
        const strip = (req as WithAttempt)[ATTEMPT]?.strip;
        if (strip) for (const h of strip) proxyReq.removeHeader(h);
        proxyReq.setTimeout(timeoutMs, onIdleTimeout);
        proxyReq.once('upgrade', () => {
          proxyReq.setTimeout(0);
          upgraded.add(socket);
        });
      },
      econnreset(_err, req) {
        const a = (req as WithAttempt)[ATTEMPT];
        if (a && a.upstream === name) failAttempt(a, CLIENT_GONE);
      },
      error(err, req, res) {
        if (!('writeHead' in res)) {
          if (upgraded.has(res)) return void res.destroy();
          const timedOut = (err as NodeJS.ErrnoException).code === 'ETIMEDOUT';
          answerSocket(res, timedOut ? 504 : 502, timedOut ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNREACHABLE', `WebSocket upgrade to ${name} failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`);
          return;
        }
        const a = (req as WithAttempt)[ATTEMPT];
        if (!a || a.upstream !== name) return;
        if (a.settled) {
          if (res.headersSent && !res.writableEnded) res.destroy();
          return;
        }
        failAttempt(a, req.destroyed && !req.complete ? CLIENT_GONE : err);
      },
    },
  });

  return {
    name,
    agent,
    target,
    pathPrefix: target.pathname === '/' ? '' : target.pathname.replace(/\/$/, ''),
    copies,
    forward(req, res, attempt) {
      return new Promise<number>((resolve, reject) => {
        attempt.resolve = resolve;
        attempt.reject = reject;
        (req as WithAttempt)[ATTEMPT] = attempt;
        void middleware(req, res, (err?: unknown) => failAttempt(attempt, err ?? new Error('the proxy did not forward the request')));
      });
    },
    upgrade(req, socket, head) {
      middleware.upgrade(req, socket as never, head);
    },
    retire() {
      // The agent destroys a socket freed while it holds maxFreeSockets idle ones.
      agent.maxFreeSockets = 0;
      for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
      copies.retire();
    },
    close() {
      agent.destroy();
      copies.close();
    },
  };
}

export const timeoutError = (upstream: string, ms: number) => Object.assign(new Error(`${upstream} did not answer within ${ms} ms`), { code: 'ETIMEDOUT' });

/** Writes a minimal JSON HTTP response on a raw (upgrade) socket and closes it. */
export function answerSocket(socket: Duplex, status: number, code: string, message: string): void {
  if (socket.destroyed) return;
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}
