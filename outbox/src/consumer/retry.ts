import { randomUUID } from 'node:crypto';
import type { ConfirmChannel, ConsumeMessage, Options } from '@strangler/platform';
import { HEADERS, headersProblem } from '../envelope.ts';

/** Set on each copy so that a basic.return can be matched to the copy it refuses. */
const COPY_HEADER = 'x-strangler-copy-id';

/**
 * Dropped on copies: what RabbitMQ adds on dead-lettering (it would grow with every retry), and
 * CC/BCC, on which it routes (a copy goes to one queue, not to queues the original's sender named).
 */
const BROKER_HEADERS = new Set(['x-death', 'x-first-death-exchange', 'x-first-death-queue', 'x-first-death-reason', 'x-last-death-exchange', 'x-last-death-queue', 'x-last-death-reason', 'CC', 'BCC']);

/** Set on a copy whose original headers did not leave room for ours: the names of those dropped. */
export const DROPPED_HEADERS = 'x-dropped-headers';
const ENVELOPE_HEADERS = new Set<string>(Object.values(HEADERS));

/**
 * The message's properties for a copy, with `headers` merged over its own (null deletes). When
 * the original's headers leave no room for ours (another producer may send up to the broker's
 * frame size; amqplib encodes at most 64 KiB), the copy keeps only the envelope's and ours (only
 * ours if even the envelope's are too big) and names the others in `x-dropped-headers`: a copy
 * that cannot be encoded could never be retried or parked, and the message would come back for
 * ever.
 */
export function copyOptions(msg: Pick<ConsumeMessage, 'properties'>, headers: Record<string, string | number | null>): Options.Publish {
  const p = msg.properties;
  let merged: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p.headers ?? {})) if (!BROKER_HEADERS.has(k)) merged[k] = v;
  for (const [k, v] of Object.entries(headers)) {
    if (v === null) delete merged[k];
    else merged[k] = v;
  }
  if (headersProblem(merged)) {
    // First the others go; if the envelope's own headers are still too big (only a foreign
    // producer can send such), they go too. The event itself travels in the body, so the copy
    // is still retried or parked like any other; what it lost is named in x-dropped-headers.
    const all = merged;
    const keeping = (keep: (k: string) => boolean) => {
      const dropped = Object.keys(all).filter((k) => !keep(k));
      return { ...Object.fromEntries(Object.entries(all).filter(([k]) => keep(k))), [DROPPED_HEADERS]: dropped.join(', ').slice(0, 1_000) };
    };
    merged = keeping((k) => ENVELOPE_HEADERS.has(k) || k in headers);
    if (headersProblem(merged)) merged = keeping((k) => k in headers);
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
 * sendCopy's rejection when the broker refused the copy (basic.nack): the queue exists but did not
 * take it (a length limit a policy set with overflow reject-publish, a quorum queue with no leader).
 */
export class CopyRefusedError extends Error {
  override name = 'CopyRefusedError';
}

const returnedCopies = new WeakMap<ConfirmChannel, Set<string>>();

/** Copy ids the broker returned on `pub`, listening for returns from the first use on. */
function returnsOf(pub: ConfirmChannel): Set<string> {
  let returned = returnedCopies.get(pub);
  if (!returned) {
    const ids = new Set<string>();
    returned = ids;
    returnedCopies.set(pub, ids);
    pub.on('return', (msg: Pick<ConsumeMessage, 'properties'>) => {
      const id = msg.properties.headers?.[COPY_HEADER];
      if (typeof id === 'string') ids.add(id);
    });
  }
  return returned;
}

/**
 * Publishes a copy of `msg` straight to `queue` (default exchange), `mandatory`, and resolves once
 * the broker confirmed it. Callers ack the original only afterwards: a crash in between leaves
 * both, and the inbox absorbs the duplicate; the other order could lose the message. A copy the
 * broker returns (the queue does not exist) rejects: a confirm alone would not say it was dropped.
 */
export function sendCopy(pub: ConfirmChannel, queue: string, msg: Pick<ConsumeMessage, 'content' | 'properties'>, headers: Record<string, string | number | null>): Promise<void> {
  const returned = returnsOf(pub);
  const copyId = randomUUID();
  return new Promise((resolve, reject) => {
    try {
      const options = { ...copyOptions(msg, { ...headers, [COPY_HEADER]: copyId }), mandatory: true };
      pub.sendToQueue(queue, msg.content, options, (err) => {
        // RabbitMQ sends the return of an unroutable mandatory message before its ack.
        const wasReturned = returned.delete(copyId);
        // amqplib's error for a basic.nack, the broker's answer for a copy it would not take.
        if (err && (err as Error).message === 'message nacked') reject(new CopyRefusedError(`the broker refused the copy to queue "${queue}" (nacked: a length limit on the queue? a quorum queue without a leader?)`));
        else if (err) reject(err);
        else if (wasReturned) reject(new Error(`queue "${queue}" does not exist: the broker returned the copy`));
        else resolve();
      });
    } catch (err) {
      reject(err);
    }
  });
}
