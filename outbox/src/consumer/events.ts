import { EventEmitter } from 'node:events';
import type { ReceivedEvent } from '../envelope.ts';

/** A consumer's lifecycle events, named `consumer:<what>`; metrics and logs hang off them. */
export interface ConsumerEventMap {
  'consumer:connected': [{ queue: string }];
  'consumer:connection:lost': [{ queue: string; error?: unknown }];
  'consumer:error': [{ queue: string; component: 'amqp' | 'db' | 'handler'; error: unknown }];
  /** One transaction committed: these events took effect, the others were duplicates or ignored. */
  'consumer:batch:committed': [{ queue: string; applied: ReceivedEvent[]; duplicates: number; ignored: number }];
  /** A delivery failed (handler error or version gap) and went to a delay queue. */
  'consumer:message:retrying': [{ queue: string; id: string; attempts: number; delayMs: number; error: string }];
  'consumer:message:parked': [{ queue: string; id: string; attempts: number; error: string }];
  /** Inbox rows past `inboxRetentionMs` deleted (only reported when there were some). */
  'consumer:inbox:pruned': [{ queue: string; count: number }];
  'consumer:stopped': [{ queue: string }];
}

export type ConsumerEvents = EventEmitter<ConsumerEventMap>;

export function safeEmitConsumer<K extends keyof ConsumerEventMap>(emitter: ConsumerEvents, name: K, ...args: ConsumerEventMap[K]): void {
  try {
    (emitter.emit as (n: K, ...a: ConsumerEventMap[K]) => boolean)(name, ...args);
  } catch (err) {
    process.emitWarning(`A listener of ${String(name)} threw: ${(err as Error)?.message ?? err}`);
  }
}
