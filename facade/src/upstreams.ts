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

/**
 * The upstreams' long-lived parts (keep-alive agent, proxy, breaker), shared by successive route
 * tables. An upstream keeps its runtime across reloads while its URL and settings are unchanged,
 * so a reload neither resets a breaker nor drops pooled connections. A changed upstream gets a
 * new runtime; the old one is retired, not closed, because requests that started on the old
 * table may still use it: retired runtimes are closed after `retireAfterMs` and on close().
 */
export class UpstreamRegistry {
  private readonly live = new Map<string, { key: string; runtime: UpstreamRuntime }>();
  private readonly retired = new Set<UpstreamRuntime>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly defaults: BreakerSettings,
    private readonly events: EventEmitter,
    private readonly retireAfterMs = 60_000,
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

  current(): UpstreamRuntime[] {
    return [...this.live.values()].map((e) => e.runtime);
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const { runtime } of this.live.values()) this.dispose(runtime);
    for (const runtime of this.retired) this.dispose(runtime);
    this.live.clear();
    this.retired.clear();
  }

  private create(name: string, spec: UpstreamSpec, settings: BreakerSettings): UpstreamRuntime {
    const breaker = createBreaker(name, settings);
    breaker.on('open', () => this.events.emit('facade:breaker:open', { upstream: name }));
    breaker.on('halfOpen', () => this.events.emit('facade:breaker:half-open', { upstream: name }));
    breaker.on('close', () => this.events.emit('facade:breaker:close', { upstream: name }));
    return { name, spec, settings, breaker, proxy: createUpstreamProxy({ name, url: spec.url, timeoutMs: settings.timeoutMs }) };
  }

  private retire(runtime: UpstreamRuntime): void {
    this.retired.add(runtime);
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.retired.delete(runtime);
      this.dispose(runtime);
    }, this.retireAfterMs);
    timer.unref();
    this.timers.add(timer);
  }

  private dispose(runtime: UpstreamRuntime): void {
    runtime.breaker.shutdown();
    runtime.proxy.close();
  }
}

export { breakerState };
