import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { currentContext } from '@strangler/platform';
import { HEADERS, headersProblem, MAX_BODY_BYTES, payloadProblem, shortStringProblem, toMessage, unpublishable } from './envelope.ts';

/** Version of the envelope and payload conventions; consumers may branch on it. */
export const EVENT_SCHEMA_VERSION = 1;

export interface NewEvent {
  /** e.g. `order`, `user`: also the first part of the routing key. */
  aggregateType: string;
  aggregateId: string;
  /** The entity's version after this change (DESIGN.md "Data ownership"). */
  aggregateVersion: number;
  /** `<aggregate>.<event>` in the past tense: `order.placed`. Used as the routing key. */
  eventType: string;
  /** The entity's full state after the change, plus anything the event means. */
  payload: Record<string, unknown>;
  /** Who handled the write (`monolith`, `notification`, ...); consumers drop their own echoes. */
  origin: string;
  /**
   * Further headers, carried in the message's headers and its envelope's `headers`. Not `origin`
   * or `schemaVersion`, which the writer sets (give the origin as `origin`); `traceparent` and
   * `requestId` replace those of the current request.
   */
  headers?: Record<string, string>;
}

export interface AppendedEvent {
  id: string;
  seq: number;
}

const RESERVED_HEADERS = ['origin', 'schemaVersion'] as const;
const EVENT_TYPE = /^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$/;

/** Payloads within this of the body limit get the relay's exact check (appendEvent). */
const NEAR_LIMIT_BYTES = 128 * 1024;
/**
 * The most a JSON text grows in bytes when Postgres prints it back as jsonb: a number in exponent
 * form prints in full (`1e308`, 5 characters, as 309 digits). So payloads over ~260 kB of text
 * get the exact check, and no smaller one can reach the limit.
 */
const MAX_JSONB_GROWTH = 64;

/**
 * Appends one event to the outbox inside the caller's transaction, so the business write and
 * its event commit or roll back together. Must be given a transaction, never a pool: an event
 * written outside the business transaction could outlive a rolled-back write.
 */
export async function appendEvent(trx: Knex.Transaction, event: NewEvent): Promise<AppendedEvent> {
  if (!trx.isTransaction) throw new Error('appendEvent needs the business transaction (knex.transaction), not a pool.');
  if (!EVENT_TYPE.test(event.eventType) || !event.eventType.startsWith(`${event.aggregateType}.`)) {
    throw new Error(`Invalid eventType "${event.eventType}": use "<aggregateType>.<past-tense verb>", e.g. "${event.aggregateType}.created".`);
  }
  if (!Number.isInteger(event.aggregateVersion) || event.aggregateVersion < 1) {
    throw new Error(`Invalid aggregateVersion ${event.aggregateVersion} for ${event.aggregateType} ${event.aggregateId}: versions start at 1.`);
  }
  for (const key of RESERVED_HEADERS) {
    // Taken over, origin would dodge the checks below (a 300-byte one is refused by the relay for
    // ever) and the consumers' echo filter; schemaVersion would reach them as NaN.
    if (event.headers && Object.hasOwn(event.headers, key)) throw new Error(`Invalid headers.${key} for ${event.eventType} of ${event.aggregateType} ${event.aggregateId}: the writer sets ${key}${key === 'origin' ? ' (give it as `origin`)' : ''}; leave it out of headers.`);
  }
  const ctx = currentContext();
  const headers: Record<string, string> = {
    origin: event.origin,
    schemaVersion: String(EVENT_SCHEMA_VERSION),
    ...(ctx?.traceparent ? { traceparent: ctx.traceparent } : {}),
    ...(ctx?.requestId ? { requestId: ctx.requestId } : {}),
    ...event.headers,
  };
  // Refused here, in the business transaction, rather than by the relay, which could only leave
  // the row unpublished with its error.
  // Serialised here once (pg would do it anyway) to be measured.
  const payload = JSON.stringify(event.payload);
  const problem =
    // Most payloads are far under the limit in characters already; bytes only near it.
    (payload.length * 3 > MAX_BODY_BYTES ? payloadProblem(Buffer.byteLength(payload)) : null) ??
    shortStringProblem('routing key (event type)', event.eventType) ??
    shortStringProblem('app id (origin)', event.origin) ??
    headersProblem({ ...headers, [HEADERS.aggregateType]: event.aggregateType, [HEADERS.aggregateId]: event.aggregateId, [HEADERS.aggregateVersion]: event.aggregateVersion });
  const id = randomUUID();
  // Near the limit, the message the relay will build, measured: the body also carries the
  // envelope and the writer's other headers, and the payload as Postgres prints jsonb (a space
  // after every ':' and ','), any of which may take it over where JSON.stringify's text fits.
  let whole: string | null = null;
  if (!problem && payload.length * MAX_JSONB_GROWTH > MAX_BODY_BYTES - NEAR_LIMIT_BYTES) {
    const { rows } = await trx.raw<{ rows: Array<{ text: string }> }>('select ?::jsonb::text as text', [payload]);
    const row = { id, seq: 0, aggregate_type: event.aggregateType, aggregate_id: event.aggregateId, aggregate_version: event.aggregateVersion, event_type: event.eventType, payload: rows[0]!.text, headers, created_at: new Date() };
    whole = unpublishable(toMessage(row));
  }
  if (problem ?? whole) throw new Error(`Event ${event.eventType} of ${event.aggregateType} ${event.aggregateId} cannot be published: ${problem ?? whole}.`);
  const [row] = await trx('outbox')
    .insert({
      id,
      aggregate_type: event.aggregateType,
      aggregate_id: event.aggregateId,
      aggregate_version: event.aggregateVersion,
      event_type: event.eventType,
      payload,
      headers,
    })
    .returning(['seq']);
  return { id, seq: Number(row.seq) };
}
