import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { newRequestId, REQUEST_ID_HEADER } from '@strangler/platform';

/**
 * Header hygiene between the client and the upstream.
 *
 * Toward the upstream: client-sent `x-strangler-*` headers are removed (only the facade sets
 * them: dry runs, shadow copies); `x-request-id` is kept when sane, otherwise generated;
 * `traceparent` passes unchanged (with tracing on, facade.ts puts its own span's in its
 * place); X-Forwarded-For is appended to, X-Forwarded-Proto and X-Forwarded-Host are set from
 * what the facade saw; hop-by-hop headers (RFC 9110 7.6.1 and any named in Connection) are not
 * forwarded; `Expect` is answered by the facade itself.
 * Transfer-Encoding stays: it is how the body is framed, and Node re-frames it per hop.
 * Toward the client: the upstream's hop-by-hop headers are dropped, the rest is unchanged.
 */

export const INTERNAL_PREFIX = 'x-strangler-';
/** With the admin token in `x-strangler-admin-token`, forces a canary route's side: `serve` or `canary`. */
export const FORCE_SIDE_HEADER = 'x-strangler-side';
export const ADMIN_TOKEN_HEADER = 'x-strangler-admin-token';
export const SHADOW_HEADER = 'x-strangler-shadow';

const HOP_BY_HOP_REQUEST = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization']);
const HOP_BY_HOP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'transfer-encoding']);
const SANE_REQUEST_ID = /^[\w.:-]{1,128}$/;
/** Headers that frame the request: a request naming one in Connection is refused (request smuggling). */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'host']);
/** Headers the facade sets itself: never removed because the client named them in Connection. */
const SET_BY_FACADE = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', REQUEST_ID_HEADER, 'traceparent']);

export interface CleanedRequest {
  requestId: string;
  /** Values of the facade's own control headers, read before they were removed. */
  forceSide: string | undefined;
  adminToken: string | undefined;
  /** Headers to leave out of the outgoing request (hop-by-hop), or null when there are none. */
  strip: string[] | null;
  /** Why the request must be refused with a 400 instead of forwarded, if it must. */
  refuse: string | null;
}

/** Cleans `req.headers` in place (one pass) and returns what the facade needs from them. */
export function cleanRequestHeaders(req: IncomingMessage, websocket = false): CleanedRequest {
  const h = req.headers;
  let forceSide: string | undefined;
  let adminToken: string | undefined;
  let strip: string[] | null = null;
  let refuse: string | null = null;
  for (const key of Object.keys(h)) {
    if (key.startsWith(INTERNAL_PREFIX)) {
      if (key === FORCE_SIDE_HEADER) forceSide = String(h[key]);
      else if (key === ADMIN_TOKEN_HEADER) adminToken = String(h[key]);
      delete h[key];
    } else if (HOP_BY_HOP_REQUEST.has(key)) {
      if (websocket && (key === 'connection' || key === 'upgrade')) continue;
      (strip ??= []).push(key);
      if (key === 'connection') {
        for (const token of String(h.connection).split(',')) {
          const name = token.trim().toLowerCase();
          // Stripping Content-Length or Transfer-Encoding would send the body unframed, where
          // the upstream reads it as a second request that no route, breaker or header rule saw.
          if (FRAMING.has(name)) refuse = `the Connection header names ${name}, which frames the request and cannot be removed`;
          else if (name && name !== 'close' && name !== 'keep-alive' && name !== 'upgrade' && !SET_BY_FACADE.has(name) && !name.startsWith(INTERNAL_PREFIX) && h[name] !== undefined) strip.push(name);
        }
      }
    } else if (key === 'expect') {
      delete h[key];
    }
  }
  const incoming = h[REQUEST_ID_HEADER];
  const requestId = typeof incoming === 'string' && SANE_REQUEST_ID.test(incoming) ? incoming : newRequestId();
  h[REQUEST_ID_HEADER] = requestId;
  const remote = req.socket.remoteAddress;
  if (remote) {
    const xff = h['x-forwarded-for'];
    h['x-forwarded-for'] = xff ? `${Array.isArray(xff) ? xff.join(', ') : xff}, ${remote}` : remote;
  }
  h['x-forwarded-proto'] = (req.socket as { encrypted?: boolean }).encrypted ? (websocket ? 'wss' : 'https') : websocket ? 'ws' : 'http';
  if (h.host) h['x-forwarded-host'] = h.host;
  else delete h['x-forwarded-host'];
  return { requestId, forceSide, adminToken, strip, refuse };
}

/**
 * Removes hop-by-hop headers from an upstream response before it is copied to the client. They
 * are set to undefined rather than deleted (http-proxy skips undefined values, and the object
 * stays fast); `connection` is then set by http-proxy from the client's own request.
 */
export function stripResponseHopByHop(headers: IncomingHttpHeaders): void {
  const connection = headers.connection;
  if (connection) {
    for (const token of String(connection).split(',')) {
      const name = token.trim().toLowerCase();
      if (name && name !== 'close' && name !== 'keep-alive' && headers[name] !== undefined) headers[name] = undefined;
    }
  }
  // One pass over the few headers present, rather than a (missing) property lookup per hop-by-hop name.
  for (const name in headers) if (HOP_BY_HOP_RESPONSE.has(name)) headers[name] = undefined;
}
