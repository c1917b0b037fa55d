import { defineErrors } from '@strangler/platform';

/**
 * Errors the facade answers with itself (everything else is the upstream's own response).
 * Transport failures are mapped deliberately: refused/reset 502, timeout 504, open breaker 503.
 */
export const facadeErrors = defineErrors({
  UPSTREAM_UNREACHABLE: { status: 502, message: 'The upstream refused the connection or could not be resolved.' },
  UPSTREAM_CONNECTION_LOST: { status: 502, message: 'The connection to the upstream failed before it answered.' },
  UPSTREAM_TIMEOUT: { status: 504, message: 'The upstream did not answer in time.' },
  UPSTREAM_CIRCUIT_OPEN: { status: 503, message: 'The upstream is failing; its circuit breaker is open. Try again shortly.' },
  BAD_REQUEST_TARGET: { status: 400, message: 'The request target must be a path ("/api/...") or an absolute http(s) URL.' },
  BAD_REQUEST_HEADERS: { status: 400, message: 'The request headers cannot be forwarded safely.' },
  ROUTE_NOT_FOUND: { status: 404, message: 'No route with that id.' },
  ROUTE_TABLE_INVALID: { status: 400, message: 'The route table is invalid; see details for every problem.' },
  ROUTE_FILE_WRITE_FAILED: { status: 500, message: 'The route file could not be written; nothing was changed.' },
  ROUTE_FILE_LOCKED: { status: 409, message: 'Another writer holds the route file; try again.' },
  ROUTE_TABLE_CONFLICT: { status: 409, message: 'The route file changed on disk in a way that cannot be combined with this change.' },
});
