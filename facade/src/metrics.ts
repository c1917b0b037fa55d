import { Counter, Gauge, type Metric, type Registry } from 'prom-client';

/**
 * The facade's Prometheus metrics.
 *
 * The per-request series (requests, duration, shadow results) are plain counters kept by the
 * facade and turned into Prometheus samples only when scraped: prom-client validates and hashes
 * the labels on every observation, even through a cached child, which costs more than the rest
 * of the facade's per-request work. Label values are bounded: route ids come from the table,
 * `code` is an HTTP status.
 */

type Labels = Record<string, string>;

interface Sample {
  labels: Labels;
  value: number;
  metricName?: string;
}

/** A counter whose series are looked up by a string key and incremented in place. */
export class FastCounter {
  readonly type = 'counter';
  readonly aggregator = 'sum';
  private readonly all = new Map<string, { labels: Labels; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
  ) {}

  inc(values: readonly string[], by = 1): void {
    const key = values.join('\u0000');
    let s = this.all.get(key);
    if (!s) this.all.set(key, (s = { labels: Object.fromEntries(this.labelNames.map((n, i) => [n, values[i]!])), value: 0 }));
    s.value += by;
  }

  samples(): Sample[] {
    return [...this.all.values()].map((s) => ({ labels: s.labels, value: s.value }));
  }

  async get() {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.samples() };
  }

  reset(): void {
    this.all.clear();
  }
}

export interface HistogramSeries {
  labels: Labels;
  /** Per bucket (not cumulative); the last slot counts values above every bound. */
  counts: number[];
  sum: number;
  count: number;
}

/** A histogram with the same bookkeeping, exposed in the Prometheus histogram format. */
export class FastHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly all = new Map<string, HistogramSeries>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
    readonly bounds: readonly number[],
  ) {}

  observe(values: readonly string[], v: number): void {
    const key = values.join('\u0000');
    let s = this.all.get(key);
    if (!s) {
      s = { labels: Object.fromEntries(this.labelNames.map((n, i) => [n, values[i]!])), counts: new Array<number>(this.bounds.length + 1).fill(0), sum: 0, count: 0 };
      this.all.set(key, s);
    }
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]!) i++;
    s.counts[i]!++;
    s.sum += v;
    s.count++;
  }

  series(): HistogramSeries[] {
    return [...this.all.values()];
  }

  async get() {
    const values: Sample[] = [];
    for (const s of this.all.values()) {
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += s.counts[i]!;
        values.push({ labels: { ...s.labels, le: String(le) }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { ...s.labels, le: '+Inf' }, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.all.clear();
  }
}

export function createFacadeMetrics(registry: Registry, breakerStates: () => Iterable<[upstream: string, state: number]>) {
  const register = (m: FastCounter | FastHistogram) => {
    registry.registerMetric(m as unknown as Metric);
    return m;
  };
  const requests = register(
    new FastCounter(
      'strangler_facade_requests_total',
      'Client requests answered, by route id ("(default)" when unmatched), upstream that answered, side (serve, canary, fallback, default) and status (499: the client went away).',
      ['route', 'upstream', 'side', 'code'],
    ),
  ) as FastCounter;
  const duration = register(
    new FastHistogram(
      'strangler_facade_request_duration_seconds',
      'Time from the request arriving to the response finishing, by route and answering upstream.',
      ['route', 'upstream'],
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    ),
  ) as FastHistogram;
  const shadow = register(
    new FastCounter('strangler_facade_shadow_total', 'Shadow comparisons by result: match, mismatch, error (the candidate failed), skipped (over a bound or the candidate breaker open).', ['route', 'result']),
  ) as FastCounter;
  const upstreamFailures = new Counter({
    name: 'strangler_facade_upstream_failures_total',
    help: 'Failed attempts to reach an upstream, by kind: refused, reset, timeout, circuit-open, status-5xx.',
    labelNames: ['upstream', 'kind'] as const,
    registers: [registry],
  });
  const fallbacks = new Counter({
    name: 'strangler_facade_fallbacks_total',
    help: 'Requests answered by the fallback upstream after the chosen one failed.',
    labelNames: ['route', 'from', 'to', 'kind'] as const,
    registers: [registry],
  });
  const shadowMismatchRatio = new Gauge({
    name: 'strangler_facade_shadow_mismatch_ratio',
    help: 'Mismatches / comparisons per route since the facade started.',
    labelNames: ['route'] as const,
    registers: [registry],
  });
  const breakerState = new Gauge({
    name: 'strangler_facade_breaker_state',
    help: 'Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.',
    labelNames: ['upstream'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [upstream, state] of breakerStates()) this.labels(upstream).set(state);
    },
  });
  const reloads = new Counter({
    name: 'strangler_facade_route_table_reloads_total',
    help: 'Route table loads by source (start, file, sighup, api) and result (applied, unchanged, invalid).',
    labelNames: ['source', 'result'] as const,
    registers: [registry],
  });
  const generation = new Gauge({
    name: 'strangler_facade_route_table_generation',
    help: 'Increments each time a new route table is swapped in.',
    registers: [registry],
  });
  let inflightNow = 0;
  new Gauge({
    name: 'strangler_facade_inflight_requests',
    help: 'Client requests being proxied right now.',
    registers: [registry],
    collect() {
      this.set(inflightNow);
    },
  });

  return {
    registry,
    requests,
    duration,
    shadow,
    upstreamFailures,
    fallbacks,
    shadowMismatchRatio,
    breakerState,
    reloads,
    generation,
    started(): void {
      inflightNow++;
    },
    /** Records one answered request (hot path). */
    observe(route: string, upstream: string, side: string, code: number, seconds: number): void {
      inflightNow--;
      requests.inc([route, upstream, side, String(code)]);
      duration.observe([route, upstream], seconds);
    },
  };
}

export type FacadeMetrics = ReturnType<typeof createFacadeMetrics>;
