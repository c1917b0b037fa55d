import type { Channel } from '@strangler/platform';

/** Queue names of one consumer; `base` is the consumer name (tests prefix it with broker.prefix). */
export interface ConsumerQueues {
  /** Durable queue bound to the exchange: `<base>.events`. */
  events: string;
  /** Parking queue for messages that failed `maxAttempts` times: `<base>.dead`. */
  dead: string;
  /**
   * Delay queue of one retry tier: `<base>.delay.<ms>ms`, a quorum queue. (Earlier versions used
   * classic queues named `<base>.retry.<ms>ms`: left alone, they hand what they hold back to
   * `<base>.events` and stay empty.)
   */
  delay(delayMs: number): string;
}

export function consumerQueues(base: string): ConsumerQueues {
  return { events: `${base}.events`, dead: `${base}.dead`, delay: (ms) => `${base}.delay.${ms}ms` };
}

export interface RetryPolicy {
  /** Failed deliveries before a message is parked. Default 8. */
  maxAttempts?: number;
  /** Delay after the first failure; doubles with each further one. Default 1,000 ms. */
  baseMs?: number;
  /** Cap of any delay. Default 60,000 ms. */
  maxMs?: number;
}

/**
 * Delay after the n-th failure (1-based): min(maxMs, baseMs * 2^(n-1)). With the defaults:
 * 1, 2, 4, 8, 16, 32, 60 s, then parked at the 8th failure, about 2 minutes after the first:
 * long enough to ride out a deploy or a missing predecessor event, short enough that a poison
 * message is in front of an engineer the same hour.
 */
export const DEFAULT_RETRY = { maxAttempts: 8, baseMs: 1_000, maxMs: 60_000 } as const;

export function retryDelays({ maxAttempts = DEFAULT_RETRY.maxAttempts, baseMs = DEFAULT_RETRY.baseMs, maxMs = DEFAULT_RETRY.maxMs }: RetryPolicy = {}): number[] {
  return Array.from({ length: Math.max(0, maxAttempts - 1) }, (_, i) => Math.min(maxMs, baseMs * 2 ** i));
}

/**
 * Declares the exchange, `<base>.events` with its bindings, one delay queue per distinct retry
 * delay and `<base>.dead`. A delay queue has no consumer: its queue-wide TTL dead-letters each
 * message back to `<base>.events` through the default exchange. One queue per delay (rather
 * than per-message TTLs in one queue) because RabbitMQ only expires messages at the head of a
 * queue: a 60 s message would hold back a 1 s one behind it. Jitter is therefore per tier, not
 * per message.
 *
 * The delay queues are quorum queues with at-least-once dead-lettering (RabbitMQ 3.10+): the
 * consumer acks a failed delivery once its copy is confirmed in a delay queue, so the hop back
 * must not lose it. Classic queues dead-letter at most once: a copy whose TTL expired while
 * `<base>.events` did not exist, or while the broker went down mid-move, was dropped. A quorum
 * queue keeps it until `<base>.events` has taken it.
 */
export async function declareConsumerTopology(
  ch: Channel,
  { exchange, queues, bindings, delays }: { exchange: string; queues: ConsumerQueues; bindings: string[]; delays: number[] },
): Promise<void> {
  await ch.assertExchange(exchange, 'topic', { durable: true });
  await ch.assertQueue(queues.events, { durable: true });
  for (const key of bindings) await ch.bindQueue(queues.events, exchange, key);
  for (const ms of new Set(delays)) await ch.assertQueue(queues.delay(ms), { durable: true, arguments: delayQueueArguments(ms, queues.events) });
  await ch.assertQueue(queues.dead, { durable: true });
}

/** Arguments of the delay queue of `ms`: see declareConsumerTopology. */
function delayQueueArguments(ms: number, target: string): Record<string, unknown> {
  return {
    'x-queue-type': 'quorum',
    'x-message-ttl': ms,
    'x-dead-letter-exchange': '',
    'x-dead-letter-routing-key': target,
    'x-dead-letter-strategy': 'at-least-once',
    // Required by at-least-once dead-lettering (no length limit is set, so nothing is refused).
    'x-overflow': 'reject-publish',
  };
}
