import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import type { IncomingHttpHeaders } from 'node:http';
import { parseJsonPath, pathMatches, type PathPattern, type PathSegment } from './json-path.ts';

/**
 * What is compared between the primary's and the candidate's responses, per route: the status,
 * the allow-listed headers, and the body. A JSON body is compared structurally after dropping
 * ignored paths and sorting arrays declared unordered; any other body byte for byte.
 */
export interface Normaliser {
  ignore: PathPattern[];
  unordered: PathPattern[];
  /** Lower-case header names compared; every other header is ignored. */
  headers: string[];
}

export function compileNormaliser(spec: { ignore: string[]; unorderedArrays: string[]; compareHeaders: string[] }): Normaliser {
  return {
    ignore: spec.ignore.map((p) => parseJsonPath(p)!),
    unordered: spec.unorderedArrays.map((p) => parseJsonPath(p)!),
    headers: spec.compareHeaders.map((h) => h.toLowerCase()),
  };
}

export interface CapturedResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The raw body bytes, or null when it exceeded the capture bound. */
  body: Buffer | null;
}

export type NormalBody = { kind: 'json'; value: unknown } | { kind: 'bytes'; value: Buffer };

export interface NormalResponse {
  status: number;
  headers: Record<string, string | undefined>;
  body: NormalBody;
}

/** A captured response with its body decoded (content-encoding undone). */
export interface DecodedResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export function decodeResponse(res: CapturedResponse & { body: Buffer }, maxBytes: number): DecodedResponse {
  return { status: res.status, headers: res.headers, body: decode(res.body, res.headers['content-encoding'], maxBytes) };
}

const headerValue = (v: string | string[] | undefined) => (v === undefined ? undefined : (Array.isArray(v) ? v.join(', ') : String(v)).replace(/\s*;\s*/g, '; ').trim());

/** True when two responses are the same as far as `n` compares them, without parsing: the common case, decided cheaply. */
export function identical(a: DecodedResponse, b: DecodedResponse, n: Normaliser): boolean {
  if (a.status !== b.status || !a.body.equals(b.body)) return false;
  for (const name of n.headers) {
    const va = a.headers[name];
    const vb = b.headers[name];
    if (va !== vb && headerValue(va) !== headerValue(vb)) return false; // the same text needs no normalising
  }
  return true;
}

/** Parses (JSON when it is JSON) and normalises a decoded response. */
export function normaliseResponse(res: DecodedResponse, n: Normaliser): NormalResponse {
  const headers: Record<string, string | undefined> = {};
  for (const name of n.headers) headers[name] = headerValue(res.headers[name]);
  return { status: res.status, headers, body: parseBody(res.body, res.headers['content-type'], n) };
}

function decode(body: Buffer, encoding: string | undefined, maxBytes: number): Buffer {
  if (!encoding || !body.length) return body;
  const options = { maxOutputLength: maxBytes };
  try {
    switch (encoding.trim().toLowerCase()) {
      case 'gzip':
      case 'x-gzip':
        return gunzipSync(body, options);
      case 'deflate':
        return inflateSync(body, options);
      case 'br':
        return brotliDecompressSync(body, options);
      default:
        return body;
    }
  } catch {
    return body;
  }
}

function parseBody(raw: Buffer, contentType: string | undefined, n: Normaliser): NormalBody {
  const first = raw.length ? raw[0] : 0;
  const looksJson = contentType?.includes('json') || first === 0x7b /* { */ || first === 0x5b; /* [ */
  if (looksJson && raw.length) {
    try {
      return { kind: 'json', value: normaliseValue(JSON.parse(raw.toString('utf8')), n) };
    } catch {
      // not JSON after all: compared as bytes
    }
  }
  return { kind: 'bytes', value: raw };
}

/**
 * A copy of `value` without ignored paths and with unordered arrays sorted canonically. Without
 * unordered arrays it is the value itself: the diff skips ignored paths as it walks, which spares
 * copying both bodies on every comparison.
 */
export function normaliseValue(value: unknown, n: Normaliser): unknown {
  if (!n.unordered.length) return value;
  const path: PathSegment[] = [];
  const ignored = () => n.ignore.some((p) => pathMatches(path, p));
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) {
      const out: unknown[] = [];
      for (let i = 0; i < v.length; i++) {
        path.push(i);
        if (!ignored()) out.push(walk(v[i]));
        path.pop();
      }
      if (n.unordered.some((p) => pathMatches(path, p, true))) out.sort((a, b) => compareStrings(stableStringify(a), stableStringify(b)));
      return out;
    }
    if (v !== null && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v)) {
        path.push(k);
        if (!ignored()) out[k] = walk((v as Record<string, unknown>)[k]);
        path.pop();
      }
      return out;
    }
    return v;
  };
  return walk(value);
}

const compareStrings = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** JSON with object keys sorted, so equal values have equal strings. */
export function stableStringify(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${stableStringify((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
