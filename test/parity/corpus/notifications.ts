/**
 * The notification endpoints' parity corpus: every case runs, in this order, against the monolith
 * and the notification service from the same starting data, and both answers must be equal after
 * normalisation (see normalise.ts). Cases build on each other (a GET of what a POST created), as a
 * client's requests do.
 *
 * Placeholders, resolved per side: `{alice}`, `{bob}` user ids; `{alice.n0}`.. the starting
 * notifications of a user (newest first); `{new:N}` the N-th id that side created during the run;
 * `{cursor}` the nextCursor of that side's previous response.
 */
export interface ParityCase {
  name: string;
  /** Whose bearer token: a user, `forged` (bad signature), `stranger` (valid, unknown user), or none. */
  as?: 'alice' | 'bob' | 'forged' | 'stranger' | 'expired';
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';
  path: string;
  /** A JSON body (sent as application/json) or raw text with its own content type. */
  body?: unknown;
  raw?: { text: string; contentType: string };
  headers?: Record<string, string>;
}

const email = (over: Record<string, unknown> = {}) => ({ userId: '{alice}', channel: 'email', template: 'order_placed', data: { orderId: 'o-1', totalCents: 2500 }, ...over });

export const notificationCorpus: ParityCase[] = [
  { name: 'lists the caller’s notifications, newest first', as: 'alice', method: 'GET', path: '/api/notifications' },
  { name: 'pages with a limit', as: 'alice', method: 'GET', path: '/api/notifications?limit=2' },
  { name: 'follows nextCursor to the next page', as: 'alice', method: 'GET', path: '/api/notifications?limit=2&cursor={cursor}' },
  { name: 'ignores unknown query parameters', as: 'alice', method: 'GET', path: '/api/notifications?limit=1&sort=asc' },
  { name: 'rejects limit 0', as: 'alice', method: 'GET', path: '/api/notifications?limit=0' },
  { name: 'rejects limit 101', as: 'alice', method: 'GET', path: '/api/notifications?limit=101' },
  { name: 'rejects a non-numeric limit and a forged cursor together', as: 'alice', method: 'GET', path: '/api/notifications?limit=ten&cursor=not-a-cursor' },
  { name: 'lists nothing for a user with no notifications', as: 'stranger', method: 'GET', path: '/api/notifications' },
  { name: 'gets an own notification', as: 'alice', method: 'GET', path: '/api/notifications/{alice.n0}' },
  { name: 'gets an own delivered notification', as: 'alice', method: 'GET', path: '/api/notifications/{alice.n2}' },
  { name: 'hides another user’s notification as not found', as: 'alice', method: 'GET', path: '/api/notifications/{bob.n0}' },
  { name: 'answers 404 for an unknown id', as: 'alice', method: 'GET', path: '/api/notifications/00000000-0000-4000-8000-000000000000' },
  { name: 'answers 404 for a malformed id', as: 'alice', method: 'GET', path: '/api/notifications/not-a-uuid' },
  { name: 'requires a token to list', method: 'GET', path: '/api/notifications' },
  { name: 'refuses a forged token', as: 'forged', method: 'GET', path: '/api/notifications' },
  { name: 'refuses an expired token', as: 'expired', method: 'GET', path: '/api/notifications/{alice.n0}' },
  { name: 'refuses a non-bearer Authorization header', method: 'GET', path: '/api/notifications', headers: { authorization: 'Basic YWxpY2U6cHc=' } },
  { name: 'queues an email', as: 'alice', method: 'POST', path: '/api/notifications', body: email() },
  { name: 'reads back the queued email', as: 'alice', method: 'GET', path: '/api/notifications/{new:1}' },
  { name: 'queues an SMS with nested data, keeping jsonb key order', as: 'alice', method: 'POST', path: '/api/notifications', body: email({ channel: 'sms', template: 'otp.code', data: { zeta: 1, alpha: { b: [1, 2, { y: null, x: true }], a: 'é ✓' }, n: 1.5 } }) },
  { name: 'queues a push with empty data', as: 'alice', method: 'POST', path: '/api/notifications', body: email({ channel: 'push', template: 'welcome', data: {} }) },
  { name: 'lists the new notifications first', as: 'alice', method: 'GET', path: '/api/notifications?limit=4' },
  { name: 'forbids notifying another user', as: 'alice', method: 'POST', path: '/api/notifications', body: email({ userId: '{bob}' }) },
  { name: 'lists every problem of a body missing all fields', as: 'alice', method: 'POST', path: '/api/notifications', body: {} },
  { name: 'lists every problem of invalid fields', as: 'alice', method: 'POST', path: '/api/notifications', body: { userId: 'nope', channel: 'fax', template: 'Bad Template!', data: [1, 2] } },
  { name: 'rejects unknown fields', as: 'alice', method: 'POST', path: '/api/notifications', body: email({ priority: 'high' }) },
  { name: 'rejects data over 8 KB', as: 'alice', method: 'POST', path: '/api/notifications', body: email({ data: { blob: 'x'.repeat(9 * 1024) } }) },
  { name: 'rejects a body over 100 kb with 413', as: 'alice', method: 'POST', path: '/api/notifications', raw: { text: JSON.stringify(email({ data: { blob: 'x'.repeat(110 * 1024) } })), contentType: 'application/json' } },
  { name: 'rejects malformed JSON', as: 'alice', method: 'POST', path: '/api/notifications', raw: { text: '{"userId": ', contentType: 'application/json' } },
  { name: 'rejects a JSON array body', as: 'alice', method: 'POST', path: '/api/notifications', raw: { text: '[1,2]', contentType: 'application/json' } },
  { name: 'treats a non-JSON content type as an empty body', as: 'alice', method: 'POST', path: '/api/notifications', raw: { text: 'userId=1', contentType: 'text/plain' } },
  { name: 'requires a token to send', method: 'POST', path: '/api/notifications', body: email() },
  { name: 'answers 404 for an unknown route below the resource', as: 'alice', method: 'GET', path: '/api/notifications/{alice.n0}/attempts' },
  { name: 'answers 404 for an unsupported method', as: 'alice', method: 'DELETE', path: '/api/notifications/{alice.n0}' },
];
