import { closeAmqp, connectAmqp, ReconnectBackoff, settlesWithin, sleep, startSpan, tracingEnabled, type ChannelModel, type ConfirmChannel, type SpanHandle } from '@strangler/platform';
import { HEADERS, toMessage, unpublishable, type OutboxRow, type OutgoingMessage } from '../envelope.ts';
import { coalesceWrites } from '../amqp-writes.ts';

export interface PublisherOptions {
  url: string;
  exchange: string;
  /** AMQP connection name (management UI, rabbitmqctl). */
  connectionName: string;
  /** A batch whose confirms have not all arrived after this long (not counting time the broker blocked us) is abandoned. */
  confirmTimeoutMs: number;
  onConnected(): void;
  onError(err: unknown): void;
  onBlocked(reason: string): void;
  onUnblocked(): void;
}

export type RejectionKind = 'unroutable' | 'nacked' | 'unencodable' | 'refused';

export interface PublishResult {
  /** Acked by the broker and routed to at least one queue. */
  confirmed: OutboxRow[];
  /** Refused: unroutable (returned), nacked, or not encodable as AMQP. Retried later with a backoff. */
  rejected: Array<{ row: OutboxRow; kind: RejectionKind; reason: string }>;
  /** Set when the channel or connection failed: rows in neither list stay unpublished. */
  transportError?: unknown;
  /**
   * The broker's reason when it closed the channel over a message it would not take (406
   * PRECONDITION_FAILED: over its max_message_size, say): a row not confirmed, of this batch or
   * of another one on the channel, is the cause. The relay then publishes such rows one at a
   * time, and refuses the one the broker closes the channel on again.
   */
  refusedByBroker?: string;
}

/** AMQP reply code of a channel the broker closed over a message it would not take. */
const PRECONDITION_FAILED = 406;
/** A connection the broker drops sooner than this after it opened counts as a failed attempt (see ReconnectBackoff). */
const STABLE_CONNECTION_MS = 10_000;

/**
 * Publishes batches on a confirm channel: every message persistent and `mandatory`, the whole
 * batch written without waiting (pausing on `drain`), then every confirm awaited.
 *
 * Invariants: a row is reported confirmed only after the broker's ack for it, and only if no
 * basic.return came for it first (RabbitMQ sends the return of an unroutable mandatory message
 * before its ack, on the same channel). A batch is never partly trusted after a transport
 * failure: unconfirmed rows are simply left for the next attempt, which may duplicate them.
 *
 * Failure modes: a closed connection or channel (broker restart, close_all_connections,
 * missing exchange) makes it reconnect in the background with jittered backoff (50 ms plus up
 * to 250 ms, 500 ms, 1 s ... capped at 5 s, growing with failed attempts and with connections
 * the broker dropped within 10 s), re-declaring the exchange; while the broker has blocked the
 * connection (resource alarm) no batch starts and the confirm timeout is suspended.
 */
export class Publisher {
  private conn: ChannelModel | null = null;
  private channel: ConfirmChannel | null = null;
  private returned = new Map<string, string>();
  private stopped = false;
  private loop: Promise<void> | null = null;
  private readonly backoff = new ReconnectBackoff({ baseMs: 250, maxMs: 5_000, stableMs: STABLE_CONNECTION_MS });
  /** Set after the first attempt: every later one waits backoff.delay() first. */
  private reconnecting = false;
  private readonly stopping = new AbortController();
  /** Connections we closed ourselves (see onConnectionClosed). */
  private readonly closedByUs = new WeakSet<ChannelModel>();
  private blocked = false;
  private channelGeneration = 0;
  private readonly wake = new EventTarget();

  constructor(private readonly opts: PublisherOptions) {}

  get connected(): boolean {
    return !!this.channel;
  }

  /** Counts the channels opened: publish() uses the one of the current generation. */
  get generation(): number {
    return this.channelGeneration;
  }

  /** A channel is open and the broker does not block us: ready() would resolve at once. */
  get isReady(): boolean {
    return !!this.channel && !this.blocked;
  }

  start(): void {
    this.loop ??= this.connectLoop().finally(() => {
      this.loop = null;
    });
  }

  /** Waits until a channel is open and the broker does not block us; false if `signal` aborted or `maxMs` passed first. */
  async ready(signal: AbortSignal, maxMs = Infinity): Promise<boolean> {
    const deadline = performance.now() + maxMs;
    while (!signal.aborted && !this.stopped) {
      if (this.isReady) return true;
      const left = deadline - performance.now();
      if (left <= 0) return false;
      this.start();
      await this.changed(signal, Math.min(1_000, left));
    }
    return false;
  }

  /**
   * A span for one publication, continuing the trace of the transaction that wrote the row; the
   * message carries the span's traceparent instead, so the consumer's span is its child. Ended
   * when the broker confirms, refuses or drops the message.
   */
  private publishSpan(msg: OutgoingMessage, row: OutboxRow): SpanHandle {
    const headers = msg.options.headers!;
    const span = startSpan(`publish ${row.event_type}`, 'producer', headers[HEADERS.traceparent] as string | undefined, {
      'messaging.system': 'rabbitmq',
      'messaging.operation.type': 'send',
      'messaging.destination.name': this.opts.exchange,
      'messaging.rabbitmq.destination.routing_key': msg.routingKey,
      'messaging.message.id': row.id,
      'strangler.aggregate': `${row.aggregate_type}/${row.aggregate_id}`,
      'strangler.aggregate_version': row.aggregate_version,
      'strangler.outbox_seq': row.seq,
    });
    headers[HEADERS.traceparent] = span.traceparent;
    return span;
  }

  async publish(rows: OutboxRow[]): Promise<PublishResult> {
    const ch = this.channel;
    const result: PublishResult = { confirmed: [], rejected: [] };
    if (!ch) return { ...result, transportError: new Error('not connected to the broker') };
    let closed: Error | null = null;
    const onClose = () => (closed ??= new Error('channel closed while publishing'));
    // Before amqplib's own close listener, which fails every pending confirm with "channel closed":
    // those rows were not refused by the broker and must be retried at once, in order.
    ch.prependOnceListener('close', onClose);
    // The broker's reason, when it closed the channel: amqplib emits it just before 'close'.
    const onError = (err: Error) => void (closed ??= err);
    ch.prependOnceListener('error', onError);
    const outcomes: Array<Promise<void>> = [];
    try {
      for (const row of rows) {
        if (closed) break;
        // Refused before amqplib sees it: its publish() would throw, and it had already counted
        // the message for a confirm (see the catch below). So is a row no message can be made
        // of (a hand-written created_at of 'infinity').
        let msg: OutgoingMessage;
        let problem: string | null;
        try {
          msg = toMessage(row);
          problem = unpublishable(msg);
        } catch (err) {
          result.rejected.push({ row, kind: 'unencodable', reason: `cannot be made into a message: ${(err as Error).message}` });
          continue;
        }
        if (problem) {
          result.rejected.push({ row, kind: 'unencodable', reason: `cannot be sent over AMQP: ${problem}` });
          continue;
        }
        let ok = true;
        const span = tracingEnabled() ? this.publishSpan(msg, row) : null;
        outcomes.push(
          new Promise<void>((resolve) => {
            try {
              ok = ch.publish(this.opts.exchange, msg.routingKey, msg.content, msg.options, (err) => {
                const returned = this.returned.get(row.id);
                if (returned !== undefined) this.returned.delete(row.id);
                // Only a basic.nack is a refusal; any other error means the channel died.
                if (err && !closed && (err as Error).message !== 'message nacked') closed = err as Error;
                if (closed) {
                  // the channel died: whatever this callback says, the row is retried
                  span?.end({ failed: `not confirmed: ${closed.message}` });
                } else if (err) {
                  result.rejected.push({ row, kind: 'nacked', reason: 'nacked by the broker' });
                  span?.end({ failed: 'nacked by the broker' });
                } else if (returned !== undefined) {
                  const reason = `unroutable: ${returned} (no queue is bound to routing key "${row.event_type}")`;
                  result.rejected.push({ row, kind: 'unroutable', reason });
                  span?.end({ failed: reason });
                } else {
                  result.confirmed.push(row);
                  span?.end();
                }
                resolve();
              });
            } catch (err) {
              span?.end({ error: err });
              // A message amqplib could not encode (unpublishable() knows the usual limits, not
              // every shape a hand-written row's headers can take) is refused like a nack; other
              // throws say the channel is gone.
              if (!closed && (err instanceof TypeError || err instanceof RangeError)) result.rejected.push({ row, kind: 'unencodable', reason: `cannot be sent over AMQP: ${err.message}` });
              // Either way, amqplib registers a message's confirm callback before writing it, so
              // after a publish() that threw, every later confirm on this channel would be
              // matched to the wrong row. Nothing on it can be trusted any more: start over on a
              // new connection, where every row not yet confirmed is published again.
              closed ??= err as Error;
              this.reset(ch, closed);
              resolve();
            }
          }),
        );
        if (!ok && !closed) await this.drained(ch, () => !!closed);
      }
      // Confirm timeout, suspended while the broker blocks the connection. One timer per batch,
      // cleared when the confirms are in: a timer left to fire would wake the process for
      // nothing, once per batch.
      await new Promise<void>((resolve) => {
        let waited = 0;
        let timer: NodeJS.Timeout | undefined;
        const finish = () => {
          clearTimeout(timer);
          resolve();
        };
        const tick = () => {
          if (closed) return finish();
          if (!this.blocked) waited += 250;
          if (waited >= this.opts.confirmTimeoutMs) {
            closed = new Error(`no publisher confirms within ${this.opts.confirmTimeoutMs} ms`);
            this.reset(ch, closed);
            return finish();
          }
          timer = setTimeout(tick, 250);
        };
        timer = setTimeout(tick, 250);
        void Promise.all(outcomes).then(finish);
      });
    } finally {
      ch.off('close', onClose);
      ch.off('error', onError);
    }
    if (!closed) return result;
    const refusedByBroker = (closed as { code?: unknown }).code === PRECONDITION_FAILED ? (closed as Error).message : undefined;
    return { ...result, transportError: closed, ...(refusedByBroker ? { refusedByBroker } : {}) };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    this.wake.dispatchEvent(new Event('change'));
    const conn = this.conn;
    this.conn = null;
    this.channel = null;
    if (conn) await closeAmqp(conn);
    // A connect in flight notices `stopped` and closes what it opened; don't wait on it for long.
    if (this.loop) await settlesWithin(this.loop, 2_000);
  }

  private async connectLoop(): Promise<void> {
    while (!this.stopped && !this.channel) {
      if (this.reconnecting) {
        await sleep(this.backoff.delay(), this.stopping.signal);
        if (this.stopped) return;
      }
      this.reconnecting = true;
      let conn: ChannelModel | null = null;
      try {
        conn = await connectAmqp(this.opts.url, this.opts.connectionName);
        coalesceWrites(conn);
        const c = conn;
        c.on('close', () => this.onConnectionClosed(c));
        c.on('blocked', (reason: string) => {
          this.blocked = true;
          this.opts.onBlocked(reason);
        });
        c.on('unblocked', () => {
          this.blocked = false;
          this.opts.onUnblocked();
          this.wake.dispatchEvent(new Event('change'));
        });
        const ch = await c.createConfirmChannel();
        // A channel the broker closed on its own (a channel-level close: 'error' with its reply
        // code, then 'close'), over a message it refused (406) or a missing exchange (404); when
        // the connection goes, its channels just close.
        let channelClosedByBroker = false;
        ch.on('error', (err: unknown) => {
          if (typeof (err as { code?: unknown }).code === 'number') channelClosedByBroker = true;
          this.opts.onError(err);
        });
        ch.on('return', (msg: { properties: { messageId?: string }; fields: { replyText?: string } }) => {
          if (msg.properties.messageId) this.returned.set(msg.properties.messageId, msg.fields.replyText ?? 'NO_ROUTE');
        });
        // A channel closed by the broker (e.g. the exchange was deleted: 404 on publish) takes
        // the connection down with it, so one path (onConnectionClosed) handles every loss.
        ch.on('close', () => {
          if (this.conn !== c) return;
          if (channelClosedByBroker) this.closedByUs.add(c);
          void c.close().catch(() => {});
        });
        await ch.assertExchange(this.opts.exchange, 'topic', { durable: true });
        if (this.stopped) {
          await closeAmqp(c);
          return;
        }
        this.conn = c;
        this.channel = ch;
        this.channelGeneration++;
        this.returned = new Map();
        this.blocked = false;
        this.backoff.opened();
        this.opts.onConnected();
        this.wake.dispatchEvent(new Event('change'));
      } catch (err) {
        this.opts.onError(err);
        if (conn) await closeAmqp(conn);
        this.backoff.failed();
      }
    }
  }

  private onConnectionClosed(conn: ChannelModel, reason = new Error('broker connection closed')) {
    if (this.conn !== conn) return;
    // A connection we closed (its channel closed over a message the broker refused, a confirm
    // timeout) is no sign of a broker that drops connections: only the others count.
    if (this.closedByUs.has(conn)) this.backoff.abandoned();
    else this.backoff.closed();
    this.conn = null;
    this.channel = null;
    this.blocked = false;
    this.wake.dispatchEvent(new Event('change'));
    if (!this.stopped) {
      this.opts.onError(reason);
      this.start();
    }
  }

  /**
   * Gives up the connection of `ch` at once and reconnects. Closing it is not enough: until the
   * broker answers the close (never, if it stopped answering), amqplib keeps the channel, which
   * then throws on every publish, and no reconnect starts. Its pending confirms fail when the
   * close completes or, at the latest, when closeAmqp drops the socket.
   */
  private reset(ch: ConfirmChannel, reason: Error) {
    const conn = this.conn;
    if (this.channel !== ch || !conn) return;
    this.closedByUs.add(conn);
    this.onConnectionClosed(conn, reason);
    void closeAmqp(conn);
  }

  /** Resolves on `drain`, or once the channel closed (no `drain` comes then) or we stop. */
  private drained(ch: ConfirmChannel, isClosed: () => boolean): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearInterval(timer);
        ch.off('drain', done);
        ch.off('close', done);
        resolve();
      };
      ch.once('drain', done);
      ch.once('close', done);
      const timer = setInterval(() => {
        if (isClosed() || this.stopped) done();
      }, 100);
    });
  }

  private changed(signal: AbortSignal, maxMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake.removeEventListener('change', done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, maxMs);
      this.wake.addEventListener('change', done, { once: true });
      signal.addEventListener('abort', done, { once: true });
    });
  }
}
