import type { EventEmitter } from 'node:events';
import { breakerSettings, breakerState, createBreaker, type Breaker, type BreakerSettings } from './breakers.ts';
import { createUpstreamProxy, type UpstreamProxy } from './proxy.ts';
import type { UpstreamSpec } from './routes/schema.ts';

export interface UpstreamRuntime {
  readonly name: string;
  readonly spec: UpstreamSpec;
  readonly proxy: UpstreamProxy;
  readonly breaker: Breaker;
  readonly settings: BreakerSettings;
}

/** What a route table holds while requests use it: see `UpstreamRegistry.lease`. */
export interface TableLease {
  /** A request (or a shadow run, a WebSocket) starts using the table. */
  hold(): void;
  /** ... and is done with it. */
  release(): void;
  /** The table is no longer current: once nothing holds it, its upstreams may close. */
  retire(): void;
}

interface RuntimeState {
  runtime: UpstreamRuntime;
  /** Tables naming this runtime that are current or still have requests in flight. */
  tables: number;
  retired: boolean;
}

/**
 * The upstreams' long-lived parts (keep-alive agent, proxy, breaker), shared by successive route
 * tables. An upstream keeps its runtime across reloads while its URL and settings are unchanged,
 * so a reload neither resets a breaker nor drops pooled connections.
 *
 * A changed (or removed) upstream gets a new runtime and the old one is retired gracefully:
 * its agent stops keeping sockets (idle ones are destroyed at once, a socket in use is destroyed
 * when its exchange ends instead of going back to the pool), and it is closed (breaker shut
 * down, agent destroyed) only when no request can use it any more. That is counted per table:
 * every request holds the table it started on (from arrival, so a request still reading its body
 * counts, until its response closes; shadow runs and WebSockets likewise), and a runtime closes
 * when every table naming it is retired and holds no request. A long upload or stream that began
 * before the reload is never cut by it, however long it lasts.
 */
export class UpstreamRegistry {
  private readonly live = new Map<string, { key: string; runtime: UpstreamRuntime }>();
  /** By proxy, which the spec-only copies of a runtime share. */
  private readonly states = new Map<UpstreamProxy, RuntimeState>();

  constructor(
    private readonly defaults: BreakerSettings,
    private readonly events: EventEmitter,
  ) {}

  /** Runtimes for every upstream of a table, reusing unchanged ones. */
  resolve(upstreams: Record<string, UpstreamSpec>): Map<string, UpstreamRuntime> {
    const out = new Map<string, UpstreamRuntime>();
    for (const [name, spec] of Object.entries(upstreams)) {
      const settings = breakerSettings(this.defaults, spec.timeoutMs, spec.breaker);
      const key = JSON.stringify([spec.url, settings]);
      const existing = this.live.get(name);
      if (existing && existing.key === key) {
        // dryRun may change without new sockets or a new breaker.
        const runtime = existing.runtime.spec === spec ? existing.runtime : { ...existing.runtime, spec };
        this.live.set(name, { key, runtime });
        out.set(name, runtime);
        continue;
      }
      if (existing) this.retire(existing.runtime);
      const runtime = this.create(name, spec, settings);
      this.live.set(name, { key, runtime });
      out.set(name, runtime);
    }
    return out;
  }

  /** Retires upstreams that the current table no longer names. */
  prune(keep: Set<string>): void {
    for (const [name, { runtime }] of this.live) {
      if (!keep.has(name)) {
        this.live.delete(name);
        this.retire(runtime);
      }
    }
  }

  /** A lease for a table that names `runtimes`: they stay open while it is current or held. */
  lease(runtimes: Iterable<UpstreamRuntime>): TableLease {
    const states = [...new Set([...runtimes].map((r) => this.states.get(r.proxy)!))];
    for (const s of states) s.tables++;
    let inFlight = 0;
    let current = true;
    let drained = false;
    const drainIfDone = () => {
      if (current || inFlight > 0 || drained) return;
      drained = true;
      for (const s of states) {
        s.tables--;
        if (s.retired && s.tables === 0) this.dispose(s);
      }
    };
    return {
      hold: () => void inFlight++,
      release: () => {
        inFlight--;
        drainIfDone();
      },
      retire: () => {
        current = false;
        drainIfDone();
      },
    };
  }

  current(): UpstreamRuntime[] {
    return [...this.live.values()].map((e) => e.runtime);
  }

  /** Closes every runtime, in use or not (the facade is shutting down). */
  close(): void {
    for (const s of this.states.values()) this.dispose(s);
    this.live.clear();
  }

  private create(name: string, spec: UpstreamSpec, settings: BreakerSettings): UpstreamRuntime {
    const breaker = createBreaker(name, settings);
    breaker.on('open', () => this.events.emit('facade:breaker:open', { upstream: name }));
    breaker.on('halfOpen', () => this.events.emit('facade:breaker:half-open', { upstream: name }));
    breaker.on('close', () => this.events.emit('facade:breaker:close', { upstream: name }));
    const runtime: UpstreamRuntime = { name, spec, settings, breaker, proxy: createUpstreamProxy({ name, url: spec.url, timeoutMs: settings.timeoutMs }) };
    this.states.set(runtime.proxy, { runtime, tables: 0, retired: false });
    return runtime;
  }

  private retire(runtime: UpstreamRuntime): void {
    const s = this.states.get(runtime.proxy);
    if (!s || s.retired) return;
    s.retired = true;
    runtime.proxy.retire();
    if (s.tables === 0) this.dispose(s);
  }

  private dispose(s: RuntimeState): void {
    if (!this.states.delete(s.runtime.proxy)) return;
    s.runtime.breaker.shutdown();
    s.runtime.proxy.close();
  }
}

export { breakerState };
