import { z } from 'zod';
import { parsePattern } from './matcher.ts';
import { parseJsonPath } from '../shadow/json-path.ts';

/**
 * The route table file (DESIGN.md "Route table"), validated field by field. Cross-field rules
 * (unknown upstreams, conflicting routes, shadowing a write without dry-run) live in load.ts,
 * because they need the whole table.
 */

export const EFFECTS = ['read', 'idempotent', 'unsafe'] as const;
export type Effects = (typeof EFFECTS)[number];
export const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', '*'] as const;

const NAME = /^[A-Za-z][\w-]*$/;
const upstreamRef = z.string({ error: 'must be the name of an upstream declared under "upstreams"' }).regex(NAME, 'must be the name of an upstream declared under "upstreams"');
const percent = z.number({ error: 'must be a number from 0 to 100' }).min(0, 'must be a number from 0 to 100').max(100, 'must be a number from 0 to 100');
const positiveMs = (what: string) => z.int({ error: `must be a whole number of milliseconds (${what})` }).positive(`must be a positive number of milliseconds (${what})`);
const jsonPath = z.string({ error: 'must be a JSON path such as $.createdAt or items[*].id' }).refine((s) => parseJsonPath(s) !== null, {
  error: (issue) => `"${String(issue.input)}" is not a JSON path: write e.g. $.createdAt, items[*].id, $.meta.* or $ for the whole body`,
});

export const breakerSchema = z.strictObject({
  /** Share of failed calls in the rolling window that opens the breaker (default 50). */
  errorThresholdPercentage: percent.optional(),
  /** How long the breaker stays open before letting one trial request through (default 5000). */
  resetTimeoutMs: positiveMs('time before a trial request').optional(),
  /** Calls needed in the window before the breaker may open (default 10). */
  volumeThreshold: z.int({ error: 'must be a whole number of calls' }).min(0, 'must be 0 or more').optional(),
  /** Length of the rolling window (default 10000). */
  rollingWindowMs: positiveMs('rolling window').min(100, 'must be at least 100 ms').optional(),
});

export const upstreamSchema = z.strictObject({
  url: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL, e.g. http://127.0.0.1:3104' }),
  /**
   * The upstream runs requests carrying `x-strangler-dry-run: 1` in a transaction it rolls back.
   * Required to shadow any route that is not `read` (`idempotent` or `unsafe`) to it.
   */
  dryRun: z.boolean({ error: 'must be true or false' }).default(false),
  /** Idle time (no bytes either way) before the response headers after which the request fails with 504 (default 10000, see DEFAULT_BREAKER in breakers.ts). */
  timeoutMs: positiveMs('idle time before the response headers').max(600_000, 'must be at most 600000 (10 minutes)').optional(),
  breaker: breakerSchema.optional(),
});

export const shadowSchema = z.strictObject({
  to: upstreamRef,
  /** Share of requests mirrored (default 100). */
  percent: percent.default(100),
  /** JSON paths left out of the comparison (subtrees), e.g. `$.createdAt`, `items[*].id`. */
  ignore: z.array(jsonPath, { error: 'must be a list of JSON paths' }).default([]),
  /** Response headers compared (case-insensitive); every other header is ignored. */
  compareHeaders: z
    .array(z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'must be a header name such as content-type'), { error: 'must be a list of header names' })
    .default(['content-type']),
  /** JSON paths of arrays compared regardless of order, e.g. `$.items` or `$` for a top-level array. */
  unorderedArrays: z.array(jsonPath, { error: 'must be a list of JSON paths' }).default([]),
  /** Share of mirrored requests also sent to the primary a second time to learn its own noise (default 5; the first 20 per route always are). */
  noiseSample: percent.default(5),
});

export const canarySchema = z.strictObject({
  to: upstreamRef,
  percent: percent,
  /** What keeps a client in its cohort: the bearer token's user, a header or a cookie. */
  stickyBy: z
    .string({ error: 'must be user, header:<name> or cookie:<name>' })
    .regex(/^(user|header:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|cookie:[!#$%&'*+\-.^_`|~0-9A-Za-z]+)$/, 'must be user, header:<name> or cookie:<name>, e.g. header:x-tenant-id')
    .default('user'),
});

export const routeSchema = z.strictObject({
  id: z.string({ error: 'every route needs an id such as notifications.send' }).regex(/^[A-Za-z0-9][\w.:-]{0,127}$/, 'must be letters, digits, ".", ":", "_" or "-" (at most 128), e.g. notifications.send'),
  match: z.strictObject(
    {
      method: z
        .string({ error: 'must be an HTTP method such as GET, or * for any' })
        .transform((m) => m.toUpperCase())
        .pipe(z.enum(METHODS, { error: `must be one of ${METHODS.join(', ')}` })),
      path: z.string({ error: 'must be a path pattern such as /api/notifications/:id' }).superRefine((path, ctx) => {
        const parsed = parsePattern(path);
        if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
      }),
    },
    { error: 'must be an object { method, path }, e.g. { method: GET, path: /api/notifications/:id }' },
  ),
  effects: z.enum(EFFECTS, { error: 'must be read, idempotent or unsafe: it decides shadowing, fallback and replay' }),
  serve: upstreamRef,
  shadow: shadowSchema.nullish(),
  canary: canarySchema.nullish(),
});

export const routeTableSchema = z.strictObject({
  upstreams: z
    .record(z.string().regex(NAME, 'upstream names are letters, digits, "-" and "_", starting with a letter'), upstreamSchema, {
      error: 'must map upstream names to { url }, e.g. monolith: { url: http://127.0.0.1:3000 }',
    })
    .refine((u) => Object.keys(u).length > 0, 'declare at least one upstream, e.g. monolith: { url: http://127.0.0.1:3000 }'),
  routes: z.array(routeSchema, { error: 'must be a list of routes' }).default([]),
  default: upstreamRef,
});

export type RouteTableSpec = z.output<typeof routeTableSchema>;
export type RouteSpec = RouteTableSpec['routes'][number];
export type UpstreamSpec = RouteTableSpec['upstreams'][string];
export type ShadowSpec = NonNullable<RouteSpec['shadow']>;
export type CanarySpec = NonNullable<RouteSpec['canary']>;
export type BreakerSpec = NonNullable<UpstreamSpec['breaker']>;
/** The table as written in the file (before defaults), e.g. for the admin API's merge patches. */
export type RouteTableInput = z.input<typeof routeTableSchema>;

/** Fields of a route the admin API and the CLI may change (a JSON merge patch; null removes). */
export const routePatchSchema = z.strictObject({
  serve: upstreamRef.optional(),
  effects: z.enum(EFFECTS, { error: 'must be read, idempotent or unsafe' }).optional(),
  match: z.looseObject({}).optional(),
  shadow: z.union([z.looseObject({}), z.null()], { error: 'must be an object such as { to: notification, percent: 100 }, or null to stop shadowing' }).optional(),
  canary: z.union([z.looseObject({}), z.null()], { error: 'must be an object such as { to: notification, percent: 5 }, or null to stop the canary' }).optional(),
});
export type RoutePatch = z.infer<typeof routePatchSchema>;
