import type { Knex } from 'knex';
import type { EventHandler, ReceivedEvent } from '@strangler/outbox';
import { assertIdentifier } from '@strangler/platform';

/**
 * An entity an extracted service writes and the monolith keeps a copy of, so its routes can be
 * flipped back without losing anything. Adding the next extraction (payment, order, user) to the
 * sync consumer is one of these plus a line in SYNCED_ENTITIES (sync/consumer.ts).
 */
export interface SyncedEntity<Row extends Record<string, unknown> = Record<string, unknown>> {
  /** The aggregate, e.g. `notification`; the consumer binds `<aggregateType>.*`. */
  aggregateType: string;
  /**
   * The writer of record whose events apply here, e.g. `notification`. The monolith's own echoes
   * are dropped before this handler runs; an event of any other origin is refused (retried,
   * then parked for a human), never applied.
   */
  origin: string;
  /** The monolith table holding the entity. */
  table: string;
  /** Primary key column, matched against the event's aggregateId (default `id`). */
  keyColumn?: string;
  /** The entity's version column (default `version`). */
  versionColumn?: string;
  /**
   * The row of `table` for the entity's full state in the event payload (DESIGN.md: payloads
   * carry the full state), key included; the version column is set from the event. Throw when
   * the payload does not fit: the message is retried, then parked.
   */
  toRow(payload: Record<string, unknown>, event: ReceivedEvent): Row;
  /**
   * More writes in the same transaction after the row was written, e.g. replacing an order's
   * items. Must not append outbox events or queue work for the monolith to do (the writer of
   * record already did it).
   */
  afterApply?(trx: Knex.Transaction, row: Row, event: ReceivedEvent): Promise<void>;
}

/** A consumer handler working one event at a time (both methods given). */
export type PerEventHandler = Required<Pick<EventHandler, 'versionOf' | 'apply'>>;

/**
 * The consumer handler that applies an entity's state by version (DESIGN.md "Data ownership"):
 * `versionOf` reads the local row's version (locking it, so two consumers cannot both apply the
 * same next version; absent = null, so only version 1 applies) and `apply` upserts the full
 * state with the event's version. Applying writes only `table` (and what `afterApply` writes):
 * no outbox event, so nothing echoes back.
 */
export function applyStateByVersion<Row extends Record<string, unknown>>(entity: SyncedEntity<Row>): PerEventHandler {
  const table = assertIdentifier(entity.table, 'table name');
  const key = assertIdentifier(entity.keyColumn ?? 'id', 'column name');
  const versionColumn = assertIdentifier(entity.versionColumn ?? 'version', 'column name');
  return {
    async versionOf(trx, event) {
      const row = await trx(table).where(key, event.aggregateId).forUpdate().first(versionColumn);
      return row ? Number(row[versionColumn]) : null;
    },
    async apply(trx, event) {
      if (event.origin !== entity.origin) {
        throw new Error(`${event.type} ${event.aggregateId} v${event.aggregateVersion} comes from "${event.origin}"; only "${entity.origin}" (the writer of record) is applied to ${table}.`);
      }
      const row = entity.toRow(event.payload, event);
      if (String(row[key]) !== event.aggregateId) throw new Error(`${event.type}: payload ${key} ${String(row[key])} is not the aggregate id ${event.aggregateId}.`);
      // The where clause is a second guard next to versionOf: a newer row is never overwritten.
      const written = await trx(table)
        .insert({ ...row, [versionColumn]: event.aggregateVersion })
        .onConflict(key)
        .merge()
        .where(`${table}.${versionColumn}`, '<', event.aggregateVersion)
        .returning(key);
      if (!written.length) throw new Error(`${table} ${event.aggregateId} changed while v${event.aggregateVersion} was applied; retrying.`);
      await entity.afterApply?.(trx, row, event);
    },
  };
}

/** One handler for several synced entities, picked by the event's aggregate type. */
export function syncHandler(entities: SyncedEntity[]): PerEventHandler {
  const handlers = new Map(entities.map((e) => [e.aggregateType, applyStateByVersion(e)]));
  const pick = (event: ReceivedEvent) => {
    const handler = handlers.get(event.aggregateType);
    if (!handler) throw new Error(`No synced entity for aggregate "${event.aggregateType}" (${event.type}); add it to SYNCED_ENTITIES or remove the binding.`);
    return handler;
  };
  return {
    versionOf: (trx, event) => pick(event).versionOf(trx, event),
    apply: (trx, event) => pick(event).apply(trx, event),
  };
}

/** The routing-key patterns that bring every event of these entities: `<aggregateType>.*`. */
export const syncBindings = (entities: SyncedEntity[]): string[] => entities.map((e) => `${e.aggregateType}.*`);
