import type { Channel, ConsumeMessage } from '@strangler/platform';

/**
 * Acknowledges a channel's deliveries in delivery order, with `multiple`: one basic.ack frame per
 * run of finished messages instead of one per message.
 *
 * Messages finish out of order (transactions run in parallel, a retried message waits for its
 * copy's confirm), so an ack covers only the run of finished messages at the front: a finished
 * message behind an unfinished one stays unacknowledged until that one finishes. Until then it
 * would be redelivered if the channel died, which the inbox absorbs; it also still counts against
 * the prefetch, so a message that takes long holds back at most `prefetch` others.
 *
 * Measured with persistent messages on a classic queue here: multiple acks in runs of 100 cost the
 * broker ~37 µs of CPU per message against ~50 µs for one ack each.
 */
export class AckWindow {
  /** Delivered, not yet acknowledged, in delivery order, from `head`. */
  private readonly order: Array<ConsumeMessage | undefined> = [];
  private head = 0;
  private readonly finished = new Set<ConsumeMessage>();

  constructor(private readonly ch: Channel) {}

  /** Every delivery must be announced here, in the order the channel delivered them. */
  delivered(msg: ConsumeMessage): void {
    this.order.push(msg);
  }

  /** Marks messages finished and acknowledges the run of finished messages at the front, if any. */
  finish(msgs: Iterable<ConsumeMessage>): void {
    for (const m of msgs) this.finished.add(m);
    let last: ConsumeMessage | null = null;
    while (this.head < this.order.length && this.finished.delete(this.order[this.head]!)) {
      last = this.order[this.head]!;
      this.order[this.head++] = undefined; // acked: not kept alive until the next splice
    }
    if (this.head > 1_024 && this.head * 2 > this.order.length) {
      this.order.splice(0, this.head);
      this.head = 0;
    }
    if (last) this.ch.ack(last, true);
  }

  /**
   * Acknowledges every finished message one by one, including those behind an unfinished one:
   * for a consumer that stops and abandons the rest (they are redelivered to the next one). After
   * this, use the window no further.
   */
  ackFinishedAlone(): void {
    for (let i = this.head; i < this.order.length; i++) {
      const m = this.order[i]!;
      if (this.finished.delete(m)) this.ch.ack(m, false);
    }
    this.order.length = 0;
    this.head = 0;
  }

  /** Delivered and not acknowledged yet (finished or not). */
  get outstanding(): number {
    return this.order.length - this.head;
  }
}
