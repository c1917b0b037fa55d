import type { ConfirmChannel, ConsumeMessage, Options } from '@strangler/platform';

/** Headers RabbitMQ adds on dead-lettering; dropped on copies so they do not grow with every retry. */
const BROKER_HEADERS = new Set(['x-death', 'x-first-death-exchange', 'x-first-death-queue', 'x-first-death-reason', 'x-last-death-exchange', 'x-last-death-queue', 'x-last-death-reason']);

/** The message's properties for a copy, with `headers` merged over its own (null deletes). */
export function copyOptions(msg: Pick<ConsumeMessage, 'properties'>, headers: Record<string, string | number | null>): Options.Publish {
  const p = msg.properties;
  const merged: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p.headers ?? {})) if (!BROKER_HEADERS.has(k)) merged[k] = v;
  for (const [k, v] of Object.entries(headers)) {
    if (v === null) delete merged[k];
    else merged[k] = v;
  }
  return {
    persistent: true,
    messageId: p.messageId,
    type: p.type,
    contentType: p.contentType,
    contentEncoding: p.contentEncoding,
    correlationId: p.correlationId,
    timestamp: p.timestamp,
    appId: p.appId,
    headers: merged,
  };
}

/**
 * Publishes a copy of `msg` straight to `queue` (default exchange) and resolves once the broker
 * confirmed it. Callers ack the original only afterwards: a crash in between leaves both, and the
 * inbox absorbs the duplicate; the other order could lose the message.
 */
export function sendCopy(pub: ConfirmChannel, queue: string, msg: Pick<ConsumeMessage, 'content' | 'properties'>, headers: Record<string, string | number | null>): Promise<void> {
  return new Promise((resolve, reject) => {
    try {
      pub.sendToQueue(queue, msg.content, copyOptions(msg, headers), (err) => (err ? reject(err) : resolve()));
    } catch (err) {
      reject(err);
    }
  });
}
