import type { Knex } from 'knex';
import { appendEvent } from '@strangler/outbox';

export const ORIGIN = 'monolith';

/**
 * Appends the event of one version bump of a synchronised entity, in the caller's transaction.
 * `state` is the entity's full stored state after the change (including `version`); `extra`
 * adds what the event means (e.g. the refund that was just issued).
 */
export async function recordEvent(
  trx: Knex.Transaction,
  aggregateType: string,
  eventType: string,
  state: { id: string; version: number },
  extra: Record<string, unknown> = {},
): Promise<void> {
  await appendEvent(trx, {
    aggregateType,
    aggregateId: state.id,
    aggregateVersion: state.version,
    eventType,
    payload: { ...state, ...extra },
    origin: ORIGIN,
  });
}
