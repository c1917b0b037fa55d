import { Gauge } from 'prom-client';
import type { Registry, ResilientGrpcClient } from '@strangler/platform';

const STATES = ['closed', 'half_open', 'open'] as const;

/**
 * `grpc_client_breaker_state{upstream, state}`: 1 for the breaker's current state, 0 for the
 * others (one series per state, so an alert is `grpc_client_breaker_state{state="open"} == 1`).
 * One gauge per registry, shared by every upstream client registered on it.
 */
export function registerBreakerMetrics(registry: Registry, ...clients: ResilientGrpcClient[]): void {
  const existing = registry.getSingleMetric('grpc_client_breaker_state') as (Gauge<'upstream' | 'state'> & { clients?: ResilientGrpcClient[] }) | undefined;
  if (existing?.clients) {
    existing.clients.push(...clients);
    return;
  }
  const tracked = [...clients];
  const gauge = new Gauge({
    name: 'grpc_client_breaker_state',
    help: 'State of the circuit breaker of each gRPC upstream (1 = current state)',
    labelNames: ['upstream', 'state'],
    registers: [registry],
    collect() {
      for (const client of tracked) {
        const b = client.breaker;
        const current = b.opened ? 'open' : b.halfOpen ? 'half_open' : 'closed';
        for (const state of STATES) this.set({ upstream: client.name, state }, state === current ? 1 : 0);
      }
    },
  });
  Object.assign(gauge, { clients: tracked });
}
