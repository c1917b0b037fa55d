import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '@strangler/platform';
import { parseRouteTable, RouteTableError } from '../src/index.ts';
import { compileMatcher, parsePattern, type PatternSegment } from '../src/routes/matcher.ts';
import { table } from './helpers.ts';

const upstreams = { monolith: { url: 'http://127.0.0.1:3000' }, notification: { url: 'http://127.0.0.1:3104' } };

function problems(text: string): string[] {
  try {
    parseRouteTable(text, 'yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(RouteTableError);
    return (err as RouteTableError).problems;
  }
  throw new Error('the table was accepted');
}

describe('route table validation', () => {
  it('accepts the table DESIGN.md shows and the checked-in facade/routes.yaml', async () => {
    const design = `
upstreams:
  monolith:     { url: http://127.0.0.1:3000 }
  notification: { url: http://127.0.0.1:3104, dryRun: true }
routes:
  - id: notifications.send
    match: { method: POST, path: /api/notifications }
    effects: unsafe
    serve: monolith
    shadow: { to: notification, percent: 100 }
    canary: { to: notification, percent: 5, stickyBy: user }
default: monolith
`;
    const { spec } = parseRouteTable(design, 'yaml');
    expect(spec.routes[0]).toMatchObject({ id: 'notifications.send', shadow: { to: 'notification', percent: 100, compareHeaders: ['content-type'] }, canary: { percent: 5 } });

    const file = path.join(repoRoot, 'facade/routes.yaml');
    const ours = parseRouteTable(await readFile(file, 'utf8'), 'yaml', file).spec;
    expect(ours.default).toBe('monolith');
    expect(Object.keys(ours.upstreams)).toEqual(['monolith', 'notification']);
    expect(ours.routes.map((r) => [r.id, r.match.method, r.match.path, r.effects, r.serve])).toEqual([
      ['notifications.send', 'POST', '/api/notifications', 'unsafe', 'monolith'],
      ['notifications.get', 'GET', '/api/notifications/:id', 'read', 'monolith'],
      ['notifications.list', 'GET', '/api/notifications', 'read', 'monolith'],
    ]);
  });

  it('reads a table saved with a byte order mark, in JSON as in YAML', () => {
    const spec = { upstreams, routes: [{ id: 'a', match: { method: 'GET', path: '/a' }, effects: 'read', serve: 'notification' }], default: 'monolith' };
    expect(parseRouteTable(`\uFEFF${JSON.stringify(spec)}`, 'json').spec.routes[0]!.serve).toBe('notification');
    expect(parseRouteTable(`\uFEFF${table(spec)}`, 'yaml').spec.routes[0]!.serve).toBe('notification');
  });

  it('names the route and the field of every problem and says what to fix', () => {
    const found = problems(
      table({
        upstreams,
        default: 'monolith',
        routes: [
          { id: 'a', match: { method: 'GET', path: 'api/a' }, effects: 'read', serve: 'monolith' },
          { id: 'b', match: { method: 'FETCH', path: '/api/b' }, effects: 'safe', serve: 'monolith', canary: { to: 'notification', percent: 120 } },
        ],
      }),
    );
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^route "a" \(routes\[0\]\) field "match\.path": must start with "\/", e\.g\. \/api\/notifications\/:id/),
        expect.stringMatching(/^route "b" \(routes\[1\]\) field "match\.method": must be one of GET, HEAD/),
        expect.stringMatching(/^route "b" \(routes\[1\]\) field "effects": must be read, idempotent or unsafe/),
        expect.stringMatching(/^route "b" \(routes\[1\]\) field "canary\.percent": must be a number from 0 to 100/),
      ]),
    );
    expect(found).toHaveLength(4);
  });

  it('refuses two routes matching the same method and path, even when their parameters are named differently', () => {
    const found = problems(
      table({
        upstreams,
        default: 'monolith',
        routes: [
          { id: 'get.one', match: { method: 'GET', path: '/api/notifications/:id' }, effects: 'read', serve: 'monolith' },
          { id: 'get.two', match: { method: 'get', path: '/API/notifications/:notificationId/' }, effects: 'read', serve: 'notification' },
          { id: 'any', match: { method: '*', path: '/api/notifications/:x' }, effects: 'unsafe', serve: 'monolith' },
          { id: 'post', match: { method: 'POST', path: '/api/notifications/:id' }, effects: 'unsafe', serve: 'monolith' },
        ],
      }),
    );
    expect(found).toContainEqual(expect.stringContaining('route "get.two" (routes[1]) and route "get.one" (routes[0]) both match GET /API/notifications/:notificationId/'));
    expect(found.some((p) => p.startsWith('route "any" (routes[2]) and route "get.one"'))).toBe(true);
    expect(found.some((p) => p.startsWith('route "post" (routes[3]) and route "any"'))).toBe(true);
  });

  it('refuses unknown upstreams wherever a route or the default names one, listing the known ones', () => {
    const found = problems(
      table({
        upstreams,
        default: 'legacy',
        routes: [{ id: 'a', match: { method: 'GET', path: '/a' }, effects: 'read', serve: 'notif', shadow: { to: 'payments' }, canary: { to: 'orders', percent: 1 } }],
      }),
    );
    expect(found).toEqual([
      'field "default": unknown upstream "legacy": declare it under "upstreams" or use one of monolith, notification',
      'route "a" (routes[0]) field "serve": unknown upstream "notif": declare it under "upstreams" or use one of monolith, notification',
      'route "a" (routes[0]) field "shadow.to": unknown upstream "payments": declare it under "upstreams" or use one of monolith, notification',
      'route "a" (routes[0]) field "canary.to": unknown upstream "orders": declare it under "upstreams" or use one of monolith, notification',
    ]);
  });

  it('refuses shadowing a route that writes (unsafe or idempotent) to an upstream that does not declare dry-run support', () => {
    const send = { id: 'notifications.send', match: { method: 'POST', path: '/api/notifications' }, effects: 'unsafe', serve: 'monolith', shadow: { to: 'notification' } };
    const update = { id: 'users.update', match: { method: 'PATCH', path: '/api/users/:id' }, effects: 'idempotent', serve: 'monolith', shadow: { to: 'notification' } };
    const read = { id: 'users.get', match: { method: 'GET', path: '/api/users/:id' }, effects: 'read', serve: 'monolith', shadow: { to: 'notification' } };
    expect(problems(table({ upstreams, default: 'monolith', routes: [send, update, read] }))).toEqual([
      expect.stringMatching(/^route "notifications\.send" \(routes\[0\]\) field "shadow\.to": the route is unsafe, so "notification" must run shadow copies as dry runs: set upstreams\.notification\.dryRun: true/),
      expect.stringMatching(
        /^route "users\.update" \(routes\[1\]\) field "shadow\.to": the route is idempotent, so "notification" must run shadow copies as dry runs \(a real write would make it a second writer\): set upstreams\.notification\.dryRun: true .*or remove the shadow$/,
      ),
    ]);
    const withDryRun = { ...upstreams, notification: { url: 'http://127.0.0.1:3104', dryRun: true } };
    expect(parseRouteTable(table({ upstreams: withDryRun, default: 'monolith', routes: [send, update, read] }), 'yaml').spec.routes).toHaveLength(3);
  });

  it('reports syntax errors with their line, and unknown fields by name', () => {
    expect(problems('upstreams:\n  monolith: { url: http://x\nroutes: [\n')[0]).toMatch(/^not valid YAML at line \d+, column \d+/);
    expect(problems(table({ upstreams: { monolith: { url: 'http://127.0.0.1:1', dryrun: true } }, default: 'monolith' }))).toEqual([
      'upstream "monolith": unknown field(s) "dryrun": remove them or check the spelling',
    ]);
    expect(() => parseRouteTable('{"upstreams": {}, "default": "m"', 'json')).toThrow(/not valid JSON/);
  });

  it('explains bad JSON paths in shadow normalisation options', () => {
    const found = problems(
      table({
        upstreams,
        default: 'monolith',
        routes: [{ id: 'a', match: { method: 'GET', path: '/a' }, effects: 'read', serve: 'monolith', shadow: { to: 'notification', ignore: ['$.ok', 'items[x]'] } }],
      }),
    );
    expect(found).toEqual(['route "a" (routes[0]) field "shadow.ignore.1": "items[x]" is not a JSON path: write e.g. $.createdAt, items[*].id, $.meta.* or $ for the whole body']);
  });
});

describe('matcher', () => {
  const m = compileMatcher(
    [
      ['GET', '/api/notifications', 'list'],
      ['GET', '/api/notifications/:id', 'get'],
      ['GET', '/api/notifications/unread', 'unread'],
      ['POST', '/api/notifications', 'send'],
      ['*', '/api/notifications/:id', 'any-one'],
      ['*', '/static/*', 'static'],
      ['GET', '/', 'root'],
    ].map(([method, p, value]) => ({ method: method!, segments: parsePattern(p!) as PatternSegment[], value: value! })),
  );

  it('matches on the path only, whatever the query string', () => {
    expect(m.match('GET', '/api/notifications?limit=5&cursor=/api/x')).toBe('list');
    expect(m.match('GET', '/api/notifications/42?x=1')).toBe('get');
    expect(m.match('GET', '/?q=1')).toBe('root');
  });

  it('prefers a static segment over a parameter, and a parameter over *', () => {
    expect(m.match('GET', '/api/notifications/unread')).toBe('unread');
    expect(m.match('GET', '/api/notifications/unread2')).toBe('get');
    expect(m.match('GET', '/static')).toBe('static');
    expect(m.match('GET', '/static/css/site.css')).toBe('static');
  });

  it('prefers the exact method over *, and answers HEAD with GET routes', () => {
    expect(m.match('DELETE', '/api/notifications/42')).toBe('any-one');
    expect(m.match('HEAD', '/api/notifications')).toBe('list');
    expect(m.match('PUT', '/api/notifications')).toBeNull();
  });

  it('ignores one trailing slash and the case of static segments, and never matches empty segments', () => {
    expect(m.match('GET', '/API/Notifications/')).toBe('list');
    expect(m.match('GET', '/api//notifications')).toBeNull();
    expect(m.match('GET', '/api/notifications/a/b')).toBeNull();
    expect(m.match('GET', 'http://evil.example/api/notifications')).toBeNull();
  });
});
