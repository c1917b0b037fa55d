import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import type { EventEmitter } from 'node:events';
import { DRY_RUN_HEADER } from '@strangler/platform';
import { SHADOW_HEADER } from '../headers.ts';
import { timeoutError } from '../proxy.ts';
import type { TableLease, UpstreamRuntime } from '../upstreams.ts';
import { diffResponses } from './diff.ts';
import type { NoiseLearner } from './noise.ts';
import { decodeResponse, identical, normaliseResponse, type CapturedResponse, type NormalResponse, type Normaliser } from './normalise.ts';
import type { ShadowRecorder, ShadowResult } from './recorder.ts';

/** What one route's shadowing needs, compiled with the route table. */
export interface ShadowTarget {
  routeId: string;
  primary: UpstreamRuntime;
  candidate: UpstreamRuntime;
  percent: number;
  normaliser: Normaliser;
  /** Copies go to the candidate with `x-strangler-dry-run: 1` (every route that is not `read`). */
  candidateDryRun: boolean;
  /**
   * How the primary may be asked a second time for noise learning: plainly (read routes), as a
   * dry run (other routes, when the primary declares dryRun), or never (it would apply twice).
   */
  probe: 'plain' | 'dry-run' | null;
  noiseSample: number;
}

export interface MirrorOptions {
  recorder: ShadowRecorder;
  noise: NoiseLearner;
  events: EventEmitter;
  /** Shadow runs in flight at once; beyond it requests are not mirrored (counted as skipped). */
  maxInFlight: number;
  /** Largest request or response body copied; larger ones are not compared (skipped). */
  maxBodyBytes: number;
}

type Outcome = { ok: true; res: CapturedResponse } | { ok: false; reason: string };

/**
 * Shadow traffic. The client always gets the primary's response, streamed as it arrives; the
 * mirror only listens to it. A bounded copy of the request goes to the candidate (and, when
 * sampled, again to the primary) through that upstream's breaker, so a failing candidate is left
 * alone while its breaker is open and never slows the client. At most `maxInFlight` runs exist
 * at once and bodies are copied up to `maxBodyBytes`; anything over a bound is skipped and
 * counted, never queued. A run ends when the primary's response, the candidate's and the probe
 * have all finished or failed, then the comparison is recorded.
 */
export class ShadowMirror {
  private inFlight = 0;
  private readonly idle = new Set<() => void>();

  constructor(private readonly o: MirrorOptions) {}

  /**
   * Starts mirroring one request (its body already read); null when it is skipped. `lease` (the
   * route table's) is held until the run ends, so the upstreams it uses stay open after a reload.
   */
  start(target: ShadowTarget, req: IncomingMessage, body: Buffer | null, requestId: string, strip: string[] | null, lease?: TableLease): ShadowRun | null {
    if (this.inFlight >= this.o.maxInFlight || body === null || target.candidate.breaker.opened) {
      this.result(target.routeId, 'skipped');
      return null;
    }
    this.inFlight++;
    lease?.hold();
    const copy: CopyRequest = { method: req.method ?? 'GET', url: req.url ?? '/', headers: copyHeaders(req.headers, strip, body), body };
    const candidate = send(target.candidate, copy, target.candidateDryRun, this.o.maxBodyBytes);
    const probeWanted = target.probe !== null && this.o.noise.shouldProbe(target.routeId, target.noiseSample);
    const probe = probeWanted ? send(target.primary, copy, target.probe === 'dry-run', this.o.maxBodyBytes) : null;
    const run = new ShadowRun(this.o.maxBodyBytes);
    void this.finish(target, copy, requestId, run, candidate, probe).finally(() => {
      lease?.release();
      this.inFlight--;
      if (this.inFlight === 0) for (const resolve of this.idle) resolve();
    });
    return run;
  }

  /** Resolves when no shadow run is in flight, or after `timeoutMs`. */
  drain(timeoutMs: number): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.idle.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.idle.add(done);
    });
  }

  private async finish(target: ShadowTarget, copy: CopyRequest, requestId: string, run: ShadowRun, candidateP: Promise<Outcome>, probeP: Promise<Outcome> | null) {
    const [primary, candidate, probe] = await Promise.all([run.primary, candidateP, probeP]);
    const { routeId } = target;
    if (!primary || primary.body === null) return this.result(routeId, 'skipped');
    if (!candidate.ok) {
      this.o.events.emit('facade:shadow:error', { routeId, requestId, upstream: target.candidate.name, reason: candidate.reason });
      return this.result(routeId, candidate.reason === 'EOPENBREAKER' ? 'skipped' : 'error');
    }
    if (candidate.res.body === null) return this.result(routeId, 'skipped');
    const max = this.o.maxBodyBytes;
    const n = target.normaliser;
    const primaryRes = decodeResponse(primary as CapturedResponse & { body: Buffer }, max);
    const candidateRes = decodeResponse(candidate.res as CapturedResponse & { body: Buffer }, max);
    let p: NormalResponse | null = null;
    if (probe?.ok && probe.res.body) {
      const probeRes = decodeResponse(probe.res as CapturedResponse & { body: Buffer }, max);
      if (!identical(primaryRes, probeRes, n)) {
        p = normaliseResponse(primaryRes, n);
        const learned = this.o.noise.learn(routeId, diffResponses(p, normaliseResponse(probeRes, n), n));
        if (learned.length) this.o.events.emit('facade:shadow:noise', { routeId, paths: learned });
      }
    }
    if (identical(primaryRes, candidateRes, n)) return this.result(routeId, 'match');
    p ??= normaliseResponse(primaryRes, n);
    const c = normaliseResponse(candidateRes, n);
    const { kept, noise } = this.o.noise.filter(routeId, diffResponses(p, c, n));
    if (!kept.length) return this.result(routeId, 'match');
    const mismatch = {
      at: new Date().toISOString(),
      routeId,
      requestId,
      method: copy.method,
      url: copy.url,
      primary: target.primary.name,
      candidate: target.candidate.name,
      diff: kept,
      noise: noise.map((e) => e.path),
    };
    this.o.recorder.record(mismatch);
    this.o.events.emit('facade:shadow:mismatch', mismatch);
    this.result(routeId, 'mismatch');
  }

  private result(routeId: string, result: ShadowResult) {
    const counts = this.o.recorder.count(routeId, result);
    this.o.events.emit('facade:shadow:result', { routeId, result, counts });
  }
}

/** The primary's side of one shadow run: a bounded copy of its response as it streams to the client. */
export class ShadowRun {
  private settle!: (res: CapturedResponse | null) => void;
  readonly primary = new Promise<CapturedResponse | null>((resolve) => (this.settle = resolve));

  constructor(private readonly maxBytes: number) {}

  /** Listens to the primary's response; call before it is piped to the client. */
  capturePrimary(proxyRes: IncomingMessage): void {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    proxyRes.on('data', (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size > this.maxBytes) {
        over = true;
        chunks.length = 0;
      } else chunks.push(chunk);
    });
    proxyRes.once('end', () => this.settle({ status: proxyRes.statusCode ?? 0, headers: proxyRes.headers, body: over ? null : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) }));
    proxyRes.once('close', () => this.settle(null));
  }

  /** The primary did not answer (it failed, or the request fell back elsewhere). */
  primaryFailed(): void {
    this.settle(null);
  }
}

interface CopyRequest {
  method: string;
  url: string;
  headers: OutgoingHttpHeaders;
  body: Buffer;
}

function copyHeaders(headers: IncomingHttpHeaders, strip: string[] | null, body: Buffer): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { ...headers };
  if (strip) for (const h of strip) delete out[h];
  if (out['transfer-encoding'] !== undefined || body.length) out['content-length'] = body.length;
  delete out['transfer-encoding'];
  delete out.connection;
  out[SHADOW_HEADER] = '1';
  return out;
}

/** Sends a copy through the upstream's breaker; 5xx and transport errors count as its failures. */
function send(up: UpstreamRuntime, copy: CopyRequest, dryRun: boolean, maxBytes: number): Promise<Outcome> {
  const headers: OutgoingHttpHeaders = dryRun ? { ...copy.headers, [DRY_RUN_HEADER]: '1' } : copy.headers;
  return up.breaker
    .fire(() =>
      request(up, copy, headers, maxBytes).then((res) => (res.status >= 500 ? Promise.reject({ code: 'EUPSTREAM_STATUS', status: res.status, captured: res }) : res)),
    )
    .then(
      (res) => ({ ok: true as const, res: res as CapturedResponse }),
      (err: { code?: string; captured?: CapturedResponse; message?: string }) => {
        if (err?.captured) return { ok: true as const, res: err.captured };
        return { ok: false as const, reason: err?.code ?? err?.message ?? 'failed' };
      },
    );
}

function request(up: UpstreamRuntime, copy: CopyRequest, headers: OutgoingHttpHeaders, maxBytes: number): Promise<CapturedResponse> {
  const target = up.proxy.target;
  return new Promise((resolve, reject) => {
    const req = (target.protocol === 'https:' ? https : http).request({
      protocol: target.protocol,
      hostname: target.hostname,
      port: target.port,
      method: copy.method,
      path: up.proxy.pathPrefix + copy.url,
      headers,
      agent: up.proxy.agent,
    });
    // Idle timeout for the whole exchange: a copy is bounded, so a stalled body must not hold a slot.
    req.setTimeout(up.settings.timeoutMs, () => req.destroy(timeoutError(up.name, up.settings.timeoutMs)));
    req.once('error', reject);
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= maxBytes) chunks.push(chunk);
      });
      res.once('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: size > maxBytes ? null : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) });
      });
      res.once('error', reject);
    });
    if (copy.body.length) req.end(copy.body);
    else req.end();
  });
}
