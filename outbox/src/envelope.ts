import type { Options } from 'amqplib';

/**
 * The event as it travels over AMQP (DESIGN.md "Events"): a JSON body that is self-describing
 * (so a parked message can be read on its own) and the same facts in properties and headers
 * (so brokers, tools and tracing can see them without parsing the body).
 */
export const HEADERS = {
  aggregateType: 'x-aggregate-type',
  aggregateId: 'x-aggregate-id',
  aggregateVersion: 'x-aggregate-version',
  origin: 'x-origin',
  traceparent: 'traceparent',
  requestId: 'x-request-id',
  schemaVersion: 'x-schema-version',
  /** Deliveries that failed so far (set by the consumer's retry path). */
  attempts: 'x-attempts',
  lastError: 'x-last-error',
  /** Set on messages in `<consumer>.dead`. */
  parkedError: 'x-parked-error',
  parkedAt: 'x-parked-at',
  replayedAt: 'x-replayed-at',
} as const;

/** A row as the relay claims it; `payload` stays JSON text, so it is never parsed and re-serialised. */
export interface OutboxRow {
  id: string;
  seq: number;
  aggregate_type: string;
  aggregate_id: string;
  aggregate_version: number;
  event_type: string;
  payload: string;
  headers: Record<string, string>;
  created_at: Date;
  /** As claimed by the relay (relay/claim.ts): the broker closed the channel over this row the last time. */
  refused_before?: boolean;
  /** As claimed by the relay: the payload's stored size (see CLAIM_MAX_STORED_BYTES). */
  stored_bytes?: number;
}

/** What a consumer's handler receives. */
export interface ReceivedEvent<P = Record<string, unknown>> {
  /** The outbox id, also the AMQP messageId and the inbox key. */
  id: string;
  /** `<aggregate>.<event>`, e.g. `order.placed`. */
  type: string;
  aggregateType: string;
  aggregateId: string;
  aggregateVersion: number;
  /** Who handled the write (`monolith`, `order`, ...). */
  origin: string;
  /** When the business transaction wrote the event (ISO 8601). */
  occurredAt: string;
  schemaVersion: number;
  payload: P;
  traceparent?: string;
  requestId?: string;
  /** Other headers the writer attached. */
  headers: Record<string, string>;
  /** Earlier failed deliveries of this message (0 on the first). */
  attempts: number;
  redelivered: boolean;
}

interface Body {
  id: string;
  type: string;
  aggregateType: string;
  aggregateId: string;
  aggregateVersion: number;
  origin: string;
  occurredAt: string;
  schemaVersion: number;
  headers: Record<string, string>;
  payload: Record<string, unknown>;
}

const KNOWN_ROW_HEADERS = new Set(['origin', 'schemaVersion', 'traceparent', 'requestId']);

export interface OutgoingMessage {
  routingKey: string;
  content: Buffer;
  options: Options.Publish;
}

/** Builds the AMQP message for an outbox row: persistent, mandatory, routing key = event type. */
export function toMessage(row: OutboxRow): OutgoingMessage {
  const h = row.headers ?? {};
  // A hand-written row may hold any JSON there: amqplib's publish() would throw on an origin that
  // is not a string, and an array's items would become headers "0", "1" ...
  if (typeof h !== 'object' || Array.isArray(h)) throw new Error(`headers (${JSON.stringify(h).slice(0, 100)}) must be a JSON object`);
  for (const key of ['origin', 'traceparent', 'requestId'] as const) {
    if (h[key] !== undefined && h[key] !== null && typeof h[key] !== 'string') throw new Error(`headers.${key} (${JSON.stringify(h[key]).slice(0, 100)}) must be a string`);
  }
  const extra: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) if (!KNOWN_ROW_HEADERS.has(k)) extra[k] = v;
  const origin = h.origin ?? 'unknown';
  const schemaVersion = Number(h.schemaVersion ?? 1);
  if (!(Number.isSafeInteger(schemaVersion) && schemaVersion >= 1)) throw new Error(`headers.schemaVersion (${JSON.stringify(h.schemaVersion).slice(0, 100)}) must be a whole number from 1`);
  // A hand-written row may hold what no message can carry: 'infinity' (pg returns a number) or a
  // year past what a JavaScript Date holds.
  if (!(row.created_at instanceof Date) || Number.isNaN(row.created_at.getTime())) throw new Error(`created_at (${String(row.created_at)}) is not a time a message can carry`);
  const occurredAt = row.created_at.toISOString();
  // The payload is spliced in as the JSON text Postgres returned: no parse/stringify per event.
  const meta = JSON.stringify({
    id: row.id,
    type: row.event_type,
    aggregateType: row.aggregate_type,
    aggregateId: row.aggregate_id,
    aggregateVersion: row.aggregate_version,
    origin,
    occurredAt,
    schemaVersion,
    headers: extra,
  });
  const content = Buffer.from(`${meta.slice(0, -1)},"payload":${row.payload}}`);
  const headers: Record<string, string | number> = {
    ...extra,
    [HEADERS.aggregateType]: row.aggregate_type,
    [HEADERS.aggregateId]: row.aggregate_id,
    [HEADERS.aggregateVersion]: row.aggregate_version,
    [HEADERS.origin]: origin,
    [HEADERS.schemaVersion]: schemaVersion,
  };
  if (h.traceparent) headers[HEADERS.traceparent] = h.traceparent;
  if (h.requestId) headers[HEADERS.requestId] = h.requestId;
  return {
    routingKey: row.event_type,
    content,
    options: {
      persistent: true,
      mandatory: true,
      messageId: row.id,
      type: row.event_type,
      contentType: 'application/json',
      timestamp: Math.floor(row.created_at.getTime() / 1000),
      appId: origin,
      headers,
    },
  };
}

// What AMQP (and amqplib's encoder) can carry: the routing key, the message properties and the
// header names are short strings of at most 255 bytes; amqplib encodes the header table into a
// 64 KiB scratch buffer. A message over these limits makes amqplib's publish() throw.
const SHORT_STRING_BYTES = 255;
const HEADER_TABLE_BYTES = 60_000;
/**
 * Largest message body the relay publishes. A broker refuses a message over its own
 * max_message_size by closing the channel, which to the relay looks like a lost connection: it
 * would publish the same rows again and again. 16 MiB is well under RabbitMQ 3.x's default
 * (128 MiB) and Java clients' default inbound limit (64 MiB); an event that large should carry a
 * reference to the data instead.
 */
export const MAX_BODY_BYTES = 16 * 1024 * 1024;
/** Room left in a body for the envelope around the payload (ids, types, origin). */
const ENVELOPE_ROOM_BYTES = 4_096;

/** Why a payload of `bytes` bytes of JSON would not fit in a message, or null. */
export function payloadProblem(bytes: number): string | null {
  return bytes > MAX_BODY_BYTES - ENVELOPE_ROOM_BYTES ? `the payload is ${bytes} bytes of JSON, more than the ${MAX_BODY_BYTES - ENVELOPE_ROOM_BYTES} a message body leaves for it` : null;
}

/**
 * Why AMQP cannot carry a header table, or null: a CC or BCC header RabbitMQ refuses, a name (at
 * any depth) over 255 bytes, or an encoding over HEADER_TABLE_BYTES. The size is an upper bound
 * of amqplib's encoding, nested tables and arrays included (another producer's headers may nest,
 * and so may an outbox row's JSON). Values amqplib refuses whatever their size (its
 * `{'!': type}` escape with an unknown type) are not foreseen here: the publisher handles the
 * throw.
 */
export function headersProblem(headers: Record<string, unknown>): string | null {
  // RabbitMQ routes on these too (sender-selected distribution) and closes the channel when one
  // is not an array of strings.
  for (const name of ['CC', 'BCC']) {
    const v = headers[name];
    if (v !== undefined && !(Array.isArray(v) && v.every((x) => typeof x === 'string'))) return `header "${name}" must be an array of routing keys (RabbitMQ routes on it), not ${JSON.stringify(v).slice(0, 40)}`;
  }
  const longNames: string[] = [];
  const size = tableBytes(headers, longNames);
  if (longNames.length) return `header name "${longNames[0]!.slice(0, 40)}..." is ${Buffer.byteLength(longNames[0]!)} bytes, AMQP allows ${SHORT_STRING_BYTES}`;
  return size > HEADER_TABLE_BYTES ? `the headers take up to ${size} bytes encoded, more than the ${HEADER_TABLE_BYTES} allowed` : null;
}

/** Upper bound of the encoded size of a field table; names over 255 bytes are added to `longNames`. */
function tableBytes(table: object, longNames: string[]): number {
  let size = 4;
  for (const [name, value] of Object.entries(table)) {
    if (value === undefined) continue; // amqplib leaves these out
    const nameBytes = Buffer.byteLength(name);
    if (nameBytes > SHORT_STRING_BYTES) longNames.push(name);
    size += 1 + nameBytes + fieldBytes(value, longNames);
  }
  return size;
}

/** Upper bound of the encoded size of one field value, its type tag included. */
function fieldBytes(value: unknown, longNames: string[]): number {
  if (value && typeof value === 'object' && Object.hasOwn(value, '!')) return fieldBytes((value as { value?: unknown }).value, longNames);
  if (typeof value === 'string') return 5 + Buffer.byteLength(value);
  if (Buffer.isBuffer(value)) return 5 + value.length;
  if (Array.isArray(value)) return value.reduce<number>((n, v) => n + fieldBytes(v, longNames), 5);
  if (value && typeof value === 'object') return 1 + tableBytes(value, longNames);
  return 9; // numbers, booleans, null, timestamps: a tag and at most 8 bytes
}

/** Why AMQP cannot carry `value` as the short string `name` (routing key, a property), or null. */
export function shortStringProblem(name: string, value: unknown): string | null {
  const bytes = typeof value === 'string' ? Buffer.byteLength(value) : 0;
  return bytes > SHORT_STRING_BYTES ? `the ${name} is ${bytes} bytes, AMQP allows ${SHORT_STRING_BYTES}` : null;
}

/** Why AMQP cannot carry this message (see HEADER_TABLE_BYTES), or null. */
export function unpublishable(msg: OutgoingMessage): string | null {
  const { messageId, type, appId, headers } = msg.options;
  return (
    shortStringProblem('routing key (event type)', msg.routingKey) ??
    shortStringProblem('message id', messageId) ??
    shortStringProblem('type', type) ??
    shortStringProblem('app id (origin)', appId) ??
    headersProblem(headers ?? {}) ??
    (msg.content.length > MAX_BODY_BYTES ? `the body is ${msg.content.length} bytes, more than the ${MAX_BODY_BYTES} the relay publishes` : null)
  );
}

/**
 * Failed deliveries so far, from the `x-attempts` header: a whole number from 0. Another producer
 * or a hand-edited replay may send anything there (0.5, -1, "two"): that counts as no attempts,
 * or as the whole part, never as an index no retry tier has.
 */
export function attemptsOf(headers: Record<string, unknown> | undefined): number {
  const n = Number(headers?.[HEADERS.attempts] ?? 0);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : 0;
}

export class MalformedMessageError extends Error {
  readonly code = 'MALFORMED_MESSAGE';
}

interface IncomingMessage {
  content: Buffer;
  fields: { redelivered: boolean };
  properties: { messageId?: unknown; type?: unknown; headers?: Record<string, unknown> };
}

/** Decodes a delivered message; throws MalformedMessageError when it cannot be an event. */
export function fromMessage(msg: IncomingMessage): ReceivedEvent {
  let body: Partial<Body>;
  try {
    body = JSON.parse(msg.content.toString('utf8')) as Partial<Body>;
  } catch (err) {
    throw new MalformedMessageError(`body is not JSON: ${(err as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new MalformedMessageError(`body is JSON but not an object: ${msg.content.toString('utf8').slice(0, 100)}`);
  const headers = msg.properties.headers ?? {};
  const id = typeof msg.properties.messageId === 'string' ? msg.properties.messageId : body.id;
  const problems: string[] = [];
  if (typeof id !== 'string' || !id) problems.push('no messageId');
  if (typeof body.type !== 'string') problems.push('no type');
  if (typeof body.aggregateType !== 'string') problems.push('no aggregateType');
  if (typeof body.aggregateId !== 'string') problems.push('no aggregateId');
  if (!Number.isInteger(body.aggregateVersion) || (body.aggregateVersion as number) < 1) problems.push('aggregateVersion is not a positive integer');
  if (typeof body.payload !== 'object' || body.payload === null) problems.push('payload is not an object');
  if (problems.length) throw new MalformedMessageError(`not an event envelope: ${problems.join(', ')}`);
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  return {
    id: id as string,
    type: body.type as string,
    aggregateType: body.aggregateType as string,
    aggregateId: body.aggregateId as string,
    aggregateVersion: body.aggregateVersion as number,
    origin: body.origin ?? str(headers[HEADERS.origin]) ?? 'unknown',
    occurredAt: body.occurredAt ?? '',
    schemaVersion: body.schemaVersion ?? 1,
    payload: body.payload as Record<string, unknown>,
    traceparent: str(headers[HEADERS.traceparent]),
    requestId: str(headers[HEADERS.requestId]),
    headers: body.headers ?? {},
    attempts: attemptsOf(headers),
    redelivered: msg.fields.redelivered,
  };
}
