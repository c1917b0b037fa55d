import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { EventEmitter } from 'node:events';
import { DRY_RUN_HEADER } from '@strangler/platform';
import { SHADOW_HEADER } from '../headers.ts';
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
    const method = req.method ?? 'GET';
    const copy: CopyRequest = { method, url: req.url ?? '/', headers: copyHeaders(req.headers, strip, body, method), hasHost: req.headers.host !== undefined, body };
    const probeWanted = target.probe !== null && this.o.noise.shouldProbe(target.routeId, target.noiseSample);
    // The run ends when its parts (the primary's answer, the candidate's, the probe's) are all in.
    const run = new ShadowRun(this.o.maxBodyBytes, probeWanted ? 3 : 2, (r) => this.end(r, target, copy, requestId, lease));
    send(target.candidate, copy, target.candidateDryRun, this.o.maxBodyBytes).then((o) => run.part('candidate', o));
    if (probeWanted) send(target.primary, copy, target.probe === 'dry-run', this.o.maxBodyBytes).then((o) => run.part('probe', o));
    return run;
  }

  private end(run: ShadowRun, target: ShadowTarget, copy: CopyRequest, requestId: string, lease: TableLease | undefined): void {
    try {
      this.finish(target, copy, requestId, run.primaryRes, run.candidate!, run.probe);
    } catch (err) {
      // A comparison that throws is a bug here, not the candidate's: counted as an error, logged.
      this.o.events.emit('facade:shadow:error', { routeId: target.routeId, requestId, upstream: target.candidate.name, reason: `comparison failed: ${(err as Error)?.message}` });
      this.result(target.routeId, 'error');
    } finally {
      lease?.release();
      this.inFlight--;
      if (this.inFlight === 0) for (const resolve of this.idle) resolve();
    }
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

  private finish(target: ShadowTarget, copy: CopyRequest, requestId: string, primary: CapturedResponse | null, candidate: Outcome, probe: Outcome | null): void {
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

/**
 * One shadow run: collects the primary's answer (a bounded copy of it as it streams to the
 * client), the candidate's and the probe's, then hands itself to the mirror for comparison.
 */
export class ShadowRun {
  /** The primary's captured answer once settled; null when it failed or was over the bound. */
  primaryRes: CapturedResponse | null = null;
  candidate: Outcome | null = null;
  probe: Outcome | null = null;
  private primarySettled = false;

  constructor(
    private readonly maxBytes: number,
    /** Parts still to come: the primary, the candidate, and the probe when there is one. */
    private waiting: number,
    private readonly onEnd: (run: ShadowRun) => void,
  ) {}

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
    // 'end' and 'close' come once each, and only the first settlement counts: `on` suffices.
    proxyRes.on('end', () => this.settlePrimary({ status: proxyRes.statusCode ?? 0, headers: proxyRes.headers, body: over ? null : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) }));
    proxyRes.on('close', () => this.settlePrimary(null));
  }

  /** The primary did not answer (it failed, or the request fell back elsewhere). */
  primaryFailed(): void {
    this.settlePrimary(null);
  }

  part(which: 'candidate' | 'probe', outcome: Outcome): void {
    this[which] = outcome;
    if (--this.waiting === 0) this.onEnd(this);
  }

  private settlePrimary(res: CapturedResponse | null): void {
    if (this.primarySettled) return;
    this.primarySettled = true;
    this.primaryRes = res;
    if (--this.waiting === 0) this.onEnd(this);
  }
}

interface CopyRequest {
  method: string;
  url: string;
  /** Flat name/value pairs, see copyHeaders. */
  headers: string[];
  /** The client sent a Host header (otherwise each copy names its upstream, as Node would). */
  hasHost: boolean;
  body: Buffer;
}

/** Methods Node sends without a body framing header when none is given (everything else gets one). */
const NO_DEFAULT_BODY = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT']);

/**
 * The copy's headers as flat name/value pairs ([name, value, name, value, ...]), written as they
 * are by the copy client (copy-client.ts), which adds nothing of its own. So what node:http would
 * add is added here: the body's Content-Length (`body` is the whole body, so the length is known;
 * chunked framing is dropped, as are Connection and the hop-by-hop headers), and in `send` a Host
 * header naming the upstream when the client sent none.
 */
function copyHeaders(headers: IncomingHttpHeaders, strip: string[] | null, body: Buffer, method: string): string[] {
  const out: string[] = [];
  let hasLength = false;
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || name === 'transfer-encoding' || name === 'connection' || (strip !== null && strip.includes(name))) continue;
    if (name === 'content-length') {
      hasLength = true;
      out.push(name, String(body.length));
    } else if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, value);
  }
  if (!hasLength && (body.length || headers['transfer-encoding'] !== undefined || !NO_DEFAULT_BODY.has(method))) out.push('content-length', String(body.length));
  out.push(SHADOW_HEADER, '1');
  return out;
}

/** Sends a copy through the upstream's breaker; 5xx and transport errors count as its failures. */
function send(up: UpstreamRuntime, copy: CopyRequest, dryRun: boolean, maxBytes: number): Promise<Outcome> {
  let headers = copy.headers;
  if (!copy.hasHost || dryRun) {
    headers = [...headers];
    if (!copy.hasHost) headers.push('host', up.proxy.target.host);
    if (dryRun) headers.push(DRY_RUN_HEADER, '1');
  }
  return up.breaker.fire(() => request(up, copy, headers, maxBytes)).then(
    (res) => ({ ok: true as const, res: res as CapturedResponse }),
    (err: { code?: string; captured?: CapturedResponse; message?: string }) => {
      if (err?.captured) return { ok: true as const, res: err.captured };
      return { ok: false as const, reason: err?.code ?? err?.message ?? 'failed' };
    },
  );
}

/**
 * One copy, captured (bounded), on the upstream's copy client. A 5xx answer rejects (a failure
 * for the breaker) with the captured response attached, so it is still compared.
 */
function request(up: UpstreamRuntime, copy: CopyRequest, headers: string[], maxBytes: number): Promise<CapturedResponse> {
  return up.proxy.copies.send({ method: copy.method, path: up.proxy.pathPrefix + copy.url, headers, body: copy.body, maxBytes, timeoutMs: up.settings.timeoutMs });
}
