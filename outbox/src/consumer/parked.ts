import type { GetMessage } from 'amqplib';
import { connectAmqp, settlesWithin, type ConfirmChannel } from '@strangler/platform';
import { attemptsOf, HEADERS } from '../envelope.ts';
import { sendCopy } from './retry.ts';
import { consumerQueues } from './topology.ts';

export interface ParkedMessage {
  id: string;
  type: string;
  aggregateType?: string;
  aggregateId?: string;
  aggregateVersion?: number;
  attempts: number;
  error: string;
  parkedAt?: string;
  /** The message body as text (the event envelope). */
  body: string;
}

export interface ParkedOptions {
  amqpUrl: string;
  /** The consumer name given to `consume({ queue })`. */
  queue: string;
  /** Most messages to read. Default 100. */
  limit?: number;
}

/**
 * Reads parked messages without removing them: each is fetched unacknowledged and returned to
 * the queue when the channel closes (RabbitMQ puts requeued messages back in their place).
 * `total` is the queue's length; at most `limit` messages are listed.
 */
export async function listParked({ amqpUrl, queue, limit = 100 }: ParkedOptions): Promise<{ total: number; messages: ParkedMessage[] }> {
  return withDeadQueue(amqpUrl, queue, false, async (ch, dead, messageCount) => {
    const messages: ParkedMessage[] = [];
    for (let i = 0; i < Math.min(limit, messageCount); i++) {
      const msg = await ch.get(dead, { noAck: false });
      if (!msg) break;
      messages.push(describeParked(msg));
    }
    return { total: messageCount, messages };
  });
}

/**
 * Sends parked messages back to `<queue>.events` with their attempt count reset (all of them up
 * to `limit`, or only the one with messageId `id`), and removes each from the parking queue once
 * the broker confirmed its copy. Replay after fixing the cause: a message that fails again is
 * parked again after the full retry cycle. The inbox makes a replay of something that did take
 * effect harmless.
 */
export async function replayParked({ amqpUrl, queue, limit = 1_000, id }: ParkedOptions & { id?: string }): Promise<{ replayed: ParkedMessage[]; remaining: number }> {
  const { events } = consumerQueues(queue);
  return withDeadQueue(amqpUrl, queue, true, async (ch, dead, messageCount) => {
    const replayed: ParkedMessage[] = [];
    for (let i = 0; i < messageCount && replayed.length < limit; i++) {
      const msg = await ch.get(dead, { noAck: false });
      if (!msg) break;
      const parked = describeParked(msg);
      if (id !== undefined && parked.id !== id) continue; // left unacked: requeued on close
      await sendCopy(ch, events, msg, {
        [HEADERS.attempts]: 0,
        [HEADERS.parkedError]: null,
        [HEADERS.parkedAt]: null,
        [HEADERS.lastError]: `replayed after: ${parked.error}`.slice(0, 1_000),
        [HEADERS.replayedAt]: new Date().toISOString(),
      });
      ch.ack(msg);
      replayed.push(parked);
      if (id !== undefined) break;
    }
    return { replayed, remaining: messageCount - replayed.length };
  });
}

const CLOSE_TIMEOUT_MS = 5_000;

/** Closes `ch`, waiting at most CLOSE_TIMEOUT_MS; true if its close handshake completed. */
async function closedCleanly(ch: ConfirmChannel): Promise<boolean> {
  let closed = false;
  await settlesWithin(ch.close().then(() => void (closed = true), () => {}), CLOSE_TIMEOUT_MS);
  return closed;
}

/**
 * Runs `fn` on a confirm channel with the parking queue's name and length; a missing queue is an
 * error that says what to give. `acks`: whether `fn` acknowledges messages (a replay), so that a
 * channel that does not close cleanly afterwards is an error.
 */
async function withDeadQueue<T>(amqpUrl: string, queue: string, acks: boolean, fn: (ch: ConfirmChannel, dead: string, messageCount: number) => Promise<T>): Promise<T> {
  const { dead } = consumerQueues(queue);
  const conn = await connectAmqp(amqpUrl, `${queue}-parked`);
  try {
    // A missing queue closes the channel that asked: ask on one of its own.
    const probe = await conn.createChannel();
    probe.on('error', () => {});
    let messageCount: number;
    try {
      ({ messageCount } = await probe.checkQueue(dead));
    } catch (err) {
      if ((err as { code?: unknown }).code === 404) throw new Error(`There is no queue "${dead}": give the name the consumer passes to consume() (e.g. notification); its queues exist once it has started.`);
      throw err;
    }
    await probe.close();
    const ch = await conn.createConfirmChannel();
    ch.on('error', () => {});
    // The channel's close handshake makes the broker process our acks first (closing only the
    // connection can drop them: a message replayed would then be both back in <queue>.events and
    // still parked) and requeues every message fetched and not acked. Closed after a failure
    // too, for the replays done before it. Bounded: amqplib never settles the close of a channel
    // whose connection died first.
    let result: T;
    try {
      result = await fn(ch, dead, messageCount);
    } catch (err) {
      await closedCleanly(ch);
      throw err;
    }
    // Only acks make a failed close matter: the messages replayed may then still be parked too.
    if (!(await closedCleanly(ch)) && acks) throw new Error(`The channel on "${dead}" did not close cleanly after the replay: the messages replayed are back in the consumer's queue, but some may also still be parked (list them, and replay again: the inbox makes a second copy harmless).`);
    return result;
  } finally {
    await conn.close().catch(() => {});
  }
}

function describeParked(msg: GetMessage): ParkedMessage {
  const h = msg.properties.headers ?? {};
  const body = msg.content.toString('utf8');
  let envelope: { aggregateType?: string; aggregateId?: string; aggregateVersion?: number; type?: string } = {};
  try {
    const parsed: unknown = JSON.parse(body);
    // JSON that is not an object (null, a number) is as malformed as text that is not JSON.
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) envelope = parsed;
  } catch {
    // a malformed message is listed as it is
  }
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  return {
    id: String(msg.properties.messageId ?? '(no id)'),
    type: String(msg.properties.type ?? envelope.type ?? ''),
    aggregateType: str(h[HEADERS.aggregateType]) ?? envelope.aggregateType,
    aggregateId: str(h[HEADERS.aggregateId]) ?? envelope.aggregateId,
    aggregateVersion: Number(h[HEADERS.aggregateVersion] ?? envelope.aggregateVersion) || undefined,
    attempts: attemptsOf(h),
    error: str(h[HEADERS.parkedError]) ?? '',
    parkedAt: str(h[HEADERS.parkedAt]),
    body,
  };
}
