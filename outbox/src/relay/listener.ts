import pgListen, { type Subscriber } from 'pg-listen';
import { backoffDelay, settlesWithin, type PgConnection } from '@strangler/platform';

const createSubscriber = pgListen.default;

export interface ListenerOptions {
  connection: PgConnection;
  applicationName: string;
  channel: string;
  /** A NOTIFY arrived. */
  onNotify(): void;
  /** LISTEN is (again) in place: run a catch-up sweep, since notifications sent meanwhile are gone. */
  onListening(): void;
  onReconnecting(attempt: number): void;
  onError(err: unknown): void;
}

/**
 * LISTEN on its own connection through pg-listen. A NOTIFY is only a wake-up hint: the relay
 * keeps a fallback poll, and every (re)connect calls `onListening` so the relay sweeps for rows
 * committed while nobody listened.
 *
 * pg-listen specifics handled here: it gives up reconnecting after `retryTimeout` (3 s by
 * default), which we raise to 10 min and then replace the subscriber entirely after its `error`;
 * it keeps reconnecting in the background after a failed first connect, so the channel is
 * registered before connecting; and a reconnect that completes after `close()` would leave a
 * live connection, so such a late `connected` closes it again.
 */
export class OutboxListener {
  private subscriber: Subscriber | null = null;
  private stopped = false;
  private reconnecting = false;
  private failures = 0;
  private restartTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: ListenerOptions) {}

  start(): void {
    if (this.stopped || this.subscriber) return;
    // pg-listen's reconnect loop does not look at close(): it would go on trying to connect for
    // the whole retryTimeout after stop(). A subscriber given up (stopped, or replaced after its
    // `error`) therefore throws from the two callbacks that loop makes, which ends it with an
    // `error` that is ignored below.
    const abandoned = () => this.stopped || this.subscriber !== sub;
    const endIfAbandoned = () => {
      if (abandoned()) throw new Error('the listener was stopped');
    };
    const sub = createSubscriber(
      // A connect that hangs (host down, partition) fails after 5 s, like the pool's.
      { ...this.opts.connection, application_name: this.opts.applicationName, connectionTimeoutMillis: 5_000 },
      {
        // Reconnect delays: up to 200, 400, 800 ms ... capped at 5 s (full jitter, 50 ms floor).
        retryInterval: (attempt: number) => {
          endIfAbandoned();
          return 50 + backoffDelay(attempt, { baseMs: 200, maxMs: 5_000 });
        },
        retryTimeout: 10 * 60_000,
        // A query every 10 s (default 30 s): a closed or reset connection shows within 10 s. On one
        // that died silently (a partition) the query hangs until TCP gives up retransmitting,
        // minutes; meanwhile the fallback poll (pollIntervalMs) stands in for the notifications.
        paranoidChecking: 10_000,
        parse: (s: string) => s,
      },
    );
    this.subscriber = sub;
    let first = true;
    sub.notifications.on(this.opts.channel, () => this.opts.onNotify());
    sub.events.on('reconnect', (attempt) => {
      endIfAbandoned(); // before the attempt opens a connection
      this.reconnecting = true;
      this.opts.onReconnecting(attempt);
    });
    sub.events.on('connected', () => {
      this.reconnecting = false;
      if (abandoned()) {
        void sub.close().catch(() => {});
        return;
      }
      if (first) return; // the first connect is reported once LISTEN is in place, below
      this.failures = 0;
      this.opts.onListening();
    });
    sub.events.on('error', (err) => {
      this.reconnecting = false;
      if (abandoned()) return;
      this.opts.onError(err);
      // pg-listen stopped retrying: start over with a fresh subscriber.
      this.subscriber = null;
      void sub.close().catch(() => {});
      this.scheduleRestart();
    });
    // Registered before connecting: if the first connect fails, pg-listen's own reconnect
    // re-issues LISTEN for every registered channel.
    const listening = Promise.resolve(sub.listenTo(this.opts.channel));
    listening.catch(() => {});
    sub
      .connect()
      .then(() => listening)
      .then(() => {
        first = false;
        if (abandoned()) return;
        this.failures = 0;
        this.opts.onListening();
      })
      .catch((err) => {
        first = false;
        if (!abandoned()) this.opts.onError(err);
      });
  }

  private scheduleRestart() {
    if (this.stopped) return;
    const delay = 50 + backoffDelay(this.failures++, { baseMs: 500, maxMs: 10_000 });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.start();
    }, delay);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const sub = this.subscriber;
    this.subscriber = null;
    if (!sub) return;
    await settlesWithin(sub.close(), 2_000);
    // A reconnect in flight would open a connection after close(); give it up to 2 s to land
    // (the 'connected' handler above then closes it).
    for (let i = 0; i < 20 && this.reconnecting; i++) await new Promise((r) => setTimeout(r, 100));
  }
}
