import { parseStickyBy, type StickyBy } from '../canary.ts';
import { compileNormaliser } from '../shadow/normalise.ts';
import type { ShadowTarget } from '../shadow/mirror.ts';
import type { TableLease, UpstreamRegistry, UpstreamRuntime } from '../upstreams.ts';
import type { LoadedTable } from './load.ts';
import { compileMatcher, parsePattern, type Matcher, type PatternSegment } from './matcher.ts';
import type { Effects, RouteSpec, RouteTableSpec } from './schema.ts';

export interface CompiledRoute {
  readonly id: string;
  readonly spec: RouteSpec;
  readonly effects: Effects;
  readonly serve: UpstreamRuntime;
  readonly canary: { to: UpstreamRuntime; percent: number; stickyBy: StickyBy } | null;
  readonly shadow: ShadowTarget | null;
}

/**
 * One immutable, compiled route table. The facade swaps whole tables (one reference), and each
 * request reads the reference once when it arrives, so it finishes on the table it started with
 * (and on its upstreams' agents and breakers, kept open for it: see `lease`).
 */
export interface RouteTable {
  readonly generation: number;
  readonly spec: RouteTableSpec;
  /** The file text and its sha256, when the table came from text. */
  readonly source: LoadedTable;
  readonly upstreams: ReadonlyMap<string, UpstreamRuntime>;
  readonly fallback: UpstreamRuntime;
  readonly routes: readonly CompiledRoute[];
  readonly byId: ReadonlyMap<string, CompiledRoute>;
  readonly matcher: Matcher<CompiledRoute>;
  /**
   * Held by every request (and shadow run, WebSocket) from arrival until it is done, and retired
   * when the table is swapped out: upstreams only this table names close once both are over.
   */
  readonly lease: TableLease;
}

export function compileTable(loaded: LoadedTable, registry: UpstreamRegistry, generation: number): RouteTable {
  const spec = loaded.spec;
  const upstreams = registry.resolve(spec.upstreams);
  registry.prune(new Set(upstreams.keys()));
  const up = (name: string) => upstreams.get(name)!;
  const routes: CompiledRoute[] = spec.routes.map((r) => {
    const serve = up(r.serve);
    const shadow: ShadowTarget | null = r.shadow
      ? {
          routeId: r.id,
          primary: serve,
          candidate: up(r.shadow.to),
          percent: r.shadow.percent,
          normaliser: compileNormaliser(r.shadow),
          // Validation made sure the candidate declares dryRun for every route that is not `read`.
          candidateDryRun: r.effects !== 'read',
          probe: r.effects === 'read' ? 'plain' : serve.spec.dryRun ? 'dry-run' : null,
          noiseSample: r.shadow.noiseSample,
        }
      : null;
    return {
      id: r.id,
      spec: r,
      effects: r.effects,
      serve,
      canary: r.canary ? { to: up(r.canary.to), percent: r.canary.percent, stickyBy: parseStickyBy(r.canary.stickyBy) } : null,
      shadow,
    };
  });
  const matcher = compileMatcher(
    routes.map((value) => ({ method: value.spec.match.method, segments: parsePattern(value.spec.match.path) as PatternSegment[], value })),
  );
  return {
    generation,
    spec,
    source: loaded,
    upstreams,
    fallback: up(spec.default),
    routes,
    byId: new Map(routes.map((r) => [r.id, r])),
    matcher,
    lease: registry.lease(upstreams.values()),
  };
}
