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

/** One series of a FastCounter: keep it and add to `value` to skip the lookup on later increments. */
export interface CounterSeries {
  labels: Labels;
  value: number;
}

/** A counter whose series are looked up by a string key and incremented in place. */
export class FastCounter {
  readonly type = 'counter';
  readonly aggregator = 'sum';
  private readonly all = new Map<string, CounterSeries>();
  /** Bumped by reset(): series handed out before it are no longer exported, so holders must look them up again. */
  epoch = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
  ) {}

  inc(values: readonly string[], by = 1): void {
    this.series(values).value += by;
  }

  /** The series for these label values (created at 0 on first use). */
  series(values: readonly string[]): CounterSeries {
    const key = values.join('\u0000');
    let s = this.all.get(key);
    if (!s) this.all.set(key, (s = { labels: Object.fromEntries(this.labelNames.map((n, i) => [n, values[i]!])), value: 0 }));
    return s;
  }

  samples(): Sample[] {
    return [...this.all.values()].map((s) => ({ labels: s.labels, value: s.value }));
  }

  async get() {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.samples() };
  }

  reset(): void {
    this.all.clear();
    this.epoch++;
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
  /** Bumped by reset(), as FastCounter.epoch. */
  epoch = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
    readonly bounds: readonly number[],
  ) {}

  observe(values: readonly string[], v: number): void {
    this.record(this.seriesFor(values), v);
  }

  /** The series for these label values (created empty on first use). */
  seriesFor(values: readonly string[]): HistogramSeries {
    const key = values.join('\u0000');
    let s = this.all.get(key);
    if (!s) {
      s = { labels: Object.fromEntries(this.labelNames.map((n, i) => [n, values[i]!])), counts: new Array<number>(this.bounds.length + 1).fill(0), sum: 0, count: 0 };
      this.all.set(key, s);
    }
    return s;
  }

  /** Adds one observation to a series from seriesFor(). */
  record(s: HistogramSeries, v: number): void {
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
    this.epoch++;
  }
}

/** The series one (route, upstream, side) answer feeds: its latency histogram and its counter per status code. */
interface AnswerSeries {
  duration: HistogramSeries;
  byCode: Map<number, CounterSeries>;
}

export interface FacadeMetricsSources {
  /** Breaker state per upstream: 0 closed, 1 half-open, 2 open. */
  breakerStates: () => Iterable<[upstream: string, state: number]>;
  /** Shadow comparisons and mismatches per route so far. */
  shadowCounts: () => Iterable<[route: string, counts: { compared: number; mismatches: number }]>;
}

export function createFacadeMetrics(registry: Registry, sources: FacadeMetricsSources) {
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
  // Computed when scraped from the recorder's counts (a prom-client label lookup per comparison cost
  // more than the comparison's bookkeeping); a route appears once it has a comparison.
  const shadowMismatchRatio = new Gauge({
    name: 'strangler_facade_shadow_mismatch_ratio',
    help: 'Mismatches / comparisons per route since the facade started.',
    labelNames: ['route'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [route, c] of sources.shadowCounts()) if (c.compared) this.labels(route).set(c.mismatches / c.compared);
    },
  });
  const breakerState = new Gauge({
    name: 'strangler_facade_breaker_state',
    help: 'Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.',
    labelNames: ['upstream'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [upstream, state] of sources.breakerStates()) this.labels(upstream).set(state);
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
  // The hot path's series, found by (route, upstream, side) and then status code through nested
  // maps of strings the route table already holds, instead of joining a key string per request.
  // Dropped when a metric is reset (its epoch moves), so no increment goes to an unexported series.
  const answers = new Map<string, Map<string, Map<string, AnswerSeries>>>();
  let answersEpoch = 0;
  const answerSeries = (route: string, upstream: string, side: string): AnswerSeries => {
    if (requests.epoch + duration.epoch !== answersEpoch) {
      answers.clear();
      answersEpoch = requests.epoch + duration.epoch;
    }
    let byUpstream = answers.get(route);
    if (!byUpstream) answers.set(route, (byUpstream = new Map()));
    let bySide = byUpstream.get(upstream);
    if (!bySide) byUpstream.set(upstream, (bySide = new Map()));
    let a = bySide.get(side);
    if (!a) bySide.set(side, (a = { duration: duration.seriesFor([route, upstream]), byCode: new Map() }));
    return a;
  };
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
      const a = answerSeries(route, upstream, side);
      let count = a.byCode.get(code);
      if (!count) a.byCode.set(code, (count = requests.series([route, upstream, side, String(code)])));
      count.value++;
      duration.record(a.duration, seconds);
    },
  };
}

export type FacadeMetrics = ReturnType<typeof createFacadeMetrics>;
