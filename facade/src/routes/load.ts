import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import type { z } from 'zod';
import { parsePattern, patternKey } from './matcher.ts';
import { routeTableSchema, type RouteTableSpec } from './schema.ts';

/** Thrown for a route table that cannot be used; `problems` lists every one, each saying what to fix. */
export class RouteTableError extends Error {
  readonly code = 'ROUTE_TABLE_INVALID';
  constructor(
    readonly problems: string[],
    readonly source = 'route table',
  ) {
    super(`Invalid ${source} (fix these and reload):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'RouteTableError';
  }
}

export type TableFormat = 'yaml' | 'json';

export const formatOf = (file: string): TableFormat => (path.extname(file).toLowerCase() === '.json' ? 'json' : 'yaml');
export const hashText = (text: string): string => createHash('sha256').update(text).digest('hex');

/** Parses YAML or JSON text into a plain value; syntax errors become a RouteTableError with the line. */
export function parseTableText(text: string, format: TableFormat, source = 'route table'): unknown {
  if (format === 'json') {
    try {
      // A byte order mark, as some Windows editors write: YAML skips it, JSON.parse does not.
      return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
    } catch (err) {
      throw new RouteTableError([`not valid JSON: ${(err as Error).message}`], source);
    }
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    throw new RouteTableError(
      doc.errors.map((e) => `not valid YAML${e.linePos ? ` at line ${e.linePos[0].line}, column ${e.linePos[0].col}` : ''}: ${e.message.split('\n')[0]}`),
      source,
    );
  }
  return doc.toJS();
}

/** Validates a parsed table: the schema, then the rules that need the whole table. */
export function validateRouteTable(input: unknown, source = 'route table'): RouteTableSpec {
  const result = routeTableSchema.safeParse(input);
  if (!result.success) throw new RouteTableError(result.error.issues.map((issue) => describeIssue(issue, input)), source);
  const table = result.data;
  const problems = crossCheck(table);
  if (problems.length) throw new RouteTableError(problems, source);
  return table;
}

export interface LoadedTable {
  spec: RouteTableSpec;
  /** The table as written (before defaults), for audit entries and write-back. */
  raw: unknown;
  text: string;
  hash: string;
  format: TableFormat;
}

export function parseRouteTable(text: string, format: TableFormat, source?: string): LoadedTable {
  const raw = parseTableText(text, format, source);
  const spec = validateRouteTable(raw, source);
  return { spec, raw, text, hash: hashText(text), format };
}

/** Reads and validates a route table file (.yaml, .yml or .json). */
export async function loadRouteTableFile(file: string): Promise<LoadedTable> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new RouteTableError([`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (check the --routes path)`], file);
  }
  return parseRouteTable(text, formatOf(file), file);
}

function routeLabel(input: unknown, index: number): string {
  const id = (input as { routes?: Array<{ id?: unknown }> } | null)?.routes?.[index]?.id;
  return typeof id === 'string' ? `route "${id}" (routes[${index}])` : `routes[${index}]`;
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown): string {
  const p = issue.path;
  let where: string;
  if (p[0] === 'routes' && typeof p[1] === 'number') {
    const field = p.slice(2).map(String).join('.');
    where = `${routeLabel(input, p[1])}${field ? ` field "${field}"` : ''}`;
  } else if (p[0] === 'upstreams' && p.length > 1) {
    const field = p.slice(2).map(String).join('.');
    where = `upstream "${String(p[1])}"${field ? ` field "${field}"` : ''}`;
  } else {
    where = p.length ? `field "${p.map(String).join('.')}"` : 'the table';
  }
  let message = issue.message;
  if (issue.code === 'unrecognized_keys') message = `unknown field(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}: remove them or check the spelling`;
  if (issue.code === 'invalid_type' && issue.input === undefined) message = `is required: ${issue.message}`;
  return `${where}: ${message}`;
}

function crossCheck(table: RouteTableSpec): string[] {
  const problems: string[] = [];
  const names = Object.keys(table.upstreams);
  const known = (name: string) => Object.hasOwn(table.upstreams, name);
  const unknown = (name: string) => `unknown upstream "${name}": declare it under "upstreams" or use one of ${names.join(', ')}`;
  if (!known(table.default)) problems.push(`field "default": ${unknown(table.default)}`);

  const ids = new Map<string, number>();
  const claimed = new Map<string, { index: number; id: string }>();
  table.routes.forEach((route, i) => {
    const label = `route "${route.id}" (routes[${i}])`;
    const firstWithId = ids.get(route.id);
    if (firstWithId !== undefined) problems.push(`${label}: id "${route.id}" is already used by routes[${firstWithId}]; give each route its own id`);
    else ids.set(route.id, i);

    if (!known(route.serve)) problems.push(`${label} field "serve": ${unknown(route.serve)}`);
    if (route.shadow) {
      const to = route.shadow.to;
      if (!known(to)) problems.push(`${label} field "shadow.to": ${unknown(to)}`);
      else if (to === route.serve) problems.push(`${label} field "shadow.to": "${to}" already serves the route; shadow to the other side`);
      else if (route.effects !== 'read' && !table.upstreams[to]!.dryRun) {
        // A shadow copy of a write that the candidate really applies makes it a second writer of
        // the same data (idempotent or not), which forks the two sides' data.
        const why = route.effects === 'idempotent' ? ' (a real write would make it a second writer)' : '';
        problems.push(
          `${label} field "shadow.to": the route is ${route.effects}, so "${to}" must run shadow copies as dry runs${why}: set upstreams.${to}.dryRun: true once it rolls back requests with x-strangler-dry-run: 1, or remove the shadow`,
        );
      }
    }
    if (route.canary) {
      const to = route.canary.to;
      if (!known(to)) problems.push(`${label} field "canary.to": ${unknown(to)}`);
      else if (to === route.serve) problems.push(`${label} field "canary.to": "${to}" already serves the route; send the canary to the other side`);
    }

    const segments = parsePattern(route.match.path);
    if (typeof segments === 'string') return; // reported by the schema
    const methods = route.match.method === '*' ? ['*'] : [route.match.method];
    for (const method of methods) {
      const key = `${method} ${patternKey(segments)}`;
      for (const [other, owner] of claimed) {
        const [otherMethod, otherPath] = other.split(' ');
        if (otherPath === patternKey(segments) && (otherMethod === method || otherMethod === '*' || method === '*')) {
          problems.push(
            `${label} and route "${owner.id}" (routes[${owner.index}]) both match ${method === '*' ? otherMethod : method} ${route.match.path}: remove one, or change the method or path of one`,
          );
        }
      }
      if (!claimed.has(key)) claimed.set(key, { index: i, id: route.id });
    }
  });
  return problems;
}
