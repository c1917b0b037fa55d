import { EventEmitter } from 'node:events';
import type { RejectionKind } from './publisher.ts';

/**
 * The relay's lifecycle events. Metrics and logs hang off these (relay/metrics.ts, relay-main.ts)
 * instead of being threaded through the code. Names are `relay:<component>:<what>`.
 */
export interface RelayEventMap {
  'relay:started': [{ instance: string }];
  'relay:stopped': [{ instance: string }];
  'relay:leader:acquired': [{ instance: string }];
  'relay:leader:lost': [{ instance: string; error?: unknown }];
  'relay:leader:waiting': [{ instance: string }];
  'relay:listen:connected': [];
  'relay:listen:reconnecting': [{ attempt: number }];
  'relay:listen:error': [{ error: unknown }];
  'relay:amqp:connected': [];
  'relay:amqp:error': [{ error: unknown }];
  'relay:amqp:blocked': [{ reason: string }];
  'relay:amqp:unblocked': [];
  'relay:db:error': [{ error: unknown }];
  /** The leader switched between waiting for NOTIFY (idle) and back-to-back polling (busy). */
  'relay:mode': [{ mode: 'notify' | 'busy' | 'poll' }];
  /**
   * On taking the lease, and whenever it changes while leading: whether claims start from a
   * floor (relay/claim.ts, ClaimFloor) or, on an outbox without the trigger it needs, from the
   * lowest `seq`.
   */
  'relay:claim:floor': [{ enabled: boolean }];
  /** The claim floor has been held back `seconds` (RelayOptions.claimFloorHeldWarnMs) by a transaction still open; once per such wait. */
  'relay:claim:floor:held': [{ seconds: number }];
  'relay:batch:published': [{ count: number; failed: number; durationMs: number }];
  'relay:batch:failed': [{ count: number; error: unknown }];
  /** A row that could not be published (unroutable, nacked, unencodable as AMQP, or refused by the broker); it is retried after a backoff. */
  'relay:publish:rejected': [{ id: string; eventType: string; kind: RejectionKind; reason: string }];
  'relay:retention:deleted': [{ count: number }];
  'relay:retention:error': [{ error: unknown }];
}

export type RelayEvents = EventEmitter<RelayEventMap>;

/** Emits without letting a failing listener break the component that emitted. */
export function safeEmit<K extends keyof RelayEventMap>(emitter: RelayEvents, name: K, ...args: RelayEventMap[K]): void {
  try {
    (emitter.emit as (n: K, ...a: RelayEventMap[K]) => boolean)(name, ...args);
  } catch (err) {
    process.emitWarning(`A listener of ${String(name)} threw: ${(err as Error)?.message ?? err}`);
  }
}
