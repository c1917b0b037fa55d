import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { diffResponses } from '../src/shadow/diff.ts';
import { NoiseLearner } from '../src/shadow/noise.ts';
import { compileNormaliser, decodeResponse, identical, normaliseResponse } from '../src/shadow/normalise.ts';

const norm = (o: Partial<{ ignore: string[]; unorderedArrays: string[]; compareHeaders: string[] }> = {}) =>
  compileNormaliser({ ignore: [], unorderedArrays: [], compareHeaders: ['content-type'], ...o });

const res = (body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }, status = 200) => ({
  status,
  headers,
  body: Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)),
});

function diff(a: ReturnType<typeof res>, b: ReturnType<typeof res>, n = norm()) {
  return diffResponses(normaliseResponse(decodeResponse(a, 1e6), n), normaliseResponse(decodeResponse(b, 1e6), n), n);
}

describe('shadow comparison', () => {
  it('reports changed, missing, extra and type differences by JSON path', () => {
    const d = diff(res({ a: 1, b: { c: [1, 2, 3] }, gone: true, t: '1' }), res({ a: 2, b: { c: [1, 2] }, added: null, t: 1 }));
    expect(d.map(({ path, kind }) => `${kind} ${path}`)).toEqual(['changed $.a', 'missing $.b.c[2]', 'missing $.gone', 'type $.t', 'extra $.added']);
    expect(d[0]).toMatchObject({ primary: 1, candidate: 2, canonical: '$.a' });
    expect(d[1]).toMatchObject({ canonical: '$.b.c[*]' });
  });

  it('leaves out ignored subtrees, at any index', () => {
    const n = norm({ ignore: ['$.meta', 'items[*].createdAt'] });
    const a = res({ meta: { at: 1 }, items: [{ id: 1, createdAt: 'x' }, { id: 2, createdAt: 'y' }] });
    const b = res({ meta: { at: 2, more: true }, items: [{ id: 1, createdAt: 'z' }, { id: 2 }] });
    expect(diff(a, b, n)).toEqual([]);
  });

  it('compares unordered arrays as multisets, after leaving out ignored fields', () => {
    const n = norm({ unorderedArrays: ['$.tags', 'items'], ignore: ['items[*].at'] });
    const a = res({ tags: ['a', 'b', 'b'], items: [{ id: 1, at: 5 }, { id: 2, at: 6 }] });
    expect(diff(a, res({ tags: ['b', 'a', 'b'], items: [{ id: 2, at: 1 }, { id: 1, at: 9 }] }), n)).toEqual([]);
    expect(diff(a, res({ tags: ['b', 'a', 'a'], items: [{ id: 2 }, { id: 1 }] }), n).map((e) => e.path)).toEqual(['$.tags[1]']);
  });

  it('compares the status and only allow-listed headers, and non-JSON bodies byte for byte after decoding', () => {
    const n = norm({ compareHeaders: ['content-type', 'cache-control'] });
    const a = res('<p>hello</p>', { 'content-type': 'text/html;charset=utf-8', 'cache-control': 'no-store', date: 'x', 'x-served-by': 'monolith' });
    const b = res(gzipSync('<p>hello</p>'), { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', date: 'y', 'x-served-by': 'svc', 'content-encoding': 'gzip' });
    expect(diff(a, b, n)).toEqual([]);
    const c = res('<p>bye</p>', { 'content-type': 'text/html', 'cache-control': 'max-age=60' }, 404);
    expect(diff(a, c, n).map((e) => e.path)).toEqual(['(status)', '(header content-type)', '(header cache-control)', '(body)']);
  });

  it('decides identical responses without parsing them', () => {
    const n = norm();
    const a = decodeResponse(res({ a: 1 }), 1e6);
    expect(identical(a, decodeResponse(res({ a: 1 }), 1e6), n)).toBe(true);
    expect(identical(a, decodeResponse(res({ a: 1 }, { 'content-type': 'application/json; charset=utf-8' }), 1e6), n)).toBe(false);
  });

  it('does not blame the candidate for paths the primary changes by itself, including under them', () => {
    const noise = new NoiseLearner(0);
    noise.learn('r', diff(res({ at: 1, meta: { id: 'x' } }), res({ at: 2, meta: { id: 'y' } })));
    const { kept, noise: suppressed } = noise.filter('r', diff(res({ at: 1, meta: { id: 'x' }, name: 'a' }), res({ at: 3, meta: { id: { deep: 1 } }, name: 'b' })));
    expect(kept.map((e) => e.path)).toEqual(['$.name']);
    expect(suppressed.map((e) => e.path)).toEqual(['$.at', '$.meta.id']);
    expect(noise.noisyPaths('r')).toEqual(['$.at', '$.meta.id']);
  });
});
