import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, onTestFinished } from 'vitest';
import YAML from 'yaml';
import { listen, type RunningServer } from '@strangler/platform';
import { createFacade, type Facade, type FacadeOptions } from '../src/index.ts';

/** Teardown registered outside a test (in beforeAll, at the top level), run at the end of the file, newest first. */
const atFileEnd: Array<() => unknown> = [];
afterAll(async () => {
  for (const fn of atFileEnd.splice(0).reverse()) await fn();
});

/**
 * Registers teardown where the resource is created: at the end of the current test when called
 * inside one, else at the end of the file. (An `afterAll` registered from inside a test or a
 * `beforeAll` is silently never run by vitest, so helpers cannot simply call `afterAll`.)
 */
export function teardown(fn: () => unknown): void {
  try {
    onTestFinished(async () => void (await fn()));
  } catch {
    atFileEnd.push(fn); // not inside a test
  }
}

/** Listens on a free loopback port; closed by `teardown`. */
async function startServer(app: Parameters<typeof listen>[0]): Promise<RunningServer> {
  const running = await listen(app, 0);
  teardown(() => running.close(1_000));
  return running;
}

export interface Recorded {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
}

export interface Upstream {
  name: string;
  url: string;
  port: number;
  server: http.Server;
  running: RunningServer;
  requests: Recorded[];
}

type Handler = (req: IncomingMessage & { body: Buffer }, res: ServerResponse) => void | Promise<void>;

const defaultHandler =
  (name: string): Handler =>
  (req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ upstream: name, method: req.method, url: req.url }));
  };

/**
 * A real HTTP upstream on a free port that records every request (with its whole body) and
 * answers with `handler` (default: JSON naming itself). Closed at the end of the test or file.
 */
export async function startUpstream(name: string, handler: Handler = defaultHandler(name), { bufferBody = true } = {}): Promise<Upstream> {
  const requests: Recorded[] = [];
  const running = await startServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    const finish = () => {
      const body = Buffer.concat(chunks);
      requests.push({ method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders, body });
      Promise.resolve(handler(Object.assign(req, { body }), res)).catch((err) => {
        res.statusCode = 500;
        res.end(String(err));
      });
    };
    if (!bufferBody) return void Promise.resolve(handler(Object.assign(req, { body: Buffer.alloc(0) }), res));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', finish);
  });
  return { name, url: running.url, port: running.port, server: running.server, running, requests };
}

/** A route table as YAML text. */
export function table(t: { upstreams: Record<string, unknown>; routes?: unknown[]; default: string }): string {
  return YAML.stringify({ upstreams: t.upstreams, routes: t.routes ?? [], default: t.default });
}

export interface TestFacade {
  facade: Facade;
  url: string;
  running: RunningServer;
}

/** A facade (factory + a port-0 listener with WebSocket upgrades), closed at the end of the test or file. */
export async function startFacade(options: FacadeOptions): Promise<TestFacade> {
  const facade = await createFacade({ breaker: { resetTimeoutMs: 60_000 }, ...options });
  teardown(() => facade.close());
  const running = await startServer(facade.handler);
  running.server.on('upgrade', facade.upgrade);
  return { facade, url: running.url, running };
}

/** A temporary folder, removed at the end of the test or file. */
export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'facade-test-'));
  teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Polls `check` until it returns a truthy value, failing after `timeoutMs`. */
export async function waitFor<T>(check: () => T | Promise<T>, timeoutMs = 5_000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
}

/** One request with node:http (no client-side decompression, redirects or header rewriting). */
export function request(
  url: string,
  opts: { method?: string; headers?: http.OutgoingHttpHeaders; body?: Buffer | string; agent?: http.Agent | false; timeoutMs?: number } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: opts.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? 10_000, () => req.destroy(new Error(`request to ${url} timed out`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

export const json = (r: RawResponse) => JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;
