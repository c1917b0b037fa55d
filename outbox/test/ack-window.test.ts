import { afterAll, describe, expect, it } from 'vitest';
import { createTestBroker } from '@strangler/platform/testing';
import type { ConsumeMessage } from '@strangler/platform';
import { AckWindow } from '../src/consumer/ack-window.ts';
import { waitFor } from './helpers.ts';

const broker = await createTestBroker();
const conn = await broker.connect('ack-window');
afterAll(() => conn.close());

/**
 * Publishes `n` messages to a fresh queue, receives them on a channel whose acks go through an
 * AckWindow, lets `act` finish some, closes the channel and returns the bodies the broker then
 * still holds (the unacknowledged ones come back to the queue).
 */
async function leftAfter(name: string, n: number, act: (w: AckWindow, msgs: ConsumeMessage[]) => void): Promise<string[]> {
  const queue = `${broker.prefix}.${name}`;
  const setup = await conn.createChannel();
  await setup.assertQueue(queue, { durable: true });
  for (let i = 1; i <= n; i++) setup.sendToQueue(queue, Buffer.from(String(i)), { persistent: true });
  const ch = await conn.createChannel();
  await ch.prefetch(100);
  const w = new AckWindow(ch);
  const msgs: ConsumeMessage[] = [];
  await ch.consume(queue, (m) => {
    if (!m) return;
    w.delivered(m);
    msgs.push(m);
  });
  await waitFor(`${n} deliveries`, () => msgs.length === n, 5_000);
  act(w, msgs);
  await ch.close(); // the close handshake comes after our acks on the same channel
  const left: string[] = [];
  for (;;) {
    const m = await setup.get(queue, { noAck: true });
    if (!m) break;
    left.push(m.content.toString());
  }
  await setup.deleteQueue(queue);
  await setup.close();
  return left.sort((a, b) => Number(a) - Number(b));
}

describe('AckWindow', () => {
  it('acknowledges the run of finished messages at the front, in one go', async () => {
    let outstanding = -1;
    const left = await leftAfter('front', 5, (w, [m1, m2, m3, , m5]) => {
      w.finish([m2!, m1!]);
      w.finish([m5!]); // behind the unfinished 4th: not acknowledged yet
      w.finish([m3!]);
      outstanding = w.outstanding;
    });
    expect(left).toEqual(['4', '5']);
    expect(outstanding).toBe(2);
  });

  it('acknowledges nothing while the first delivery is unfinished, then everything finished behind it', async () => {
    const before = await leftAfter('blocked', 4, (w, [, m2, m3]) => w.finish([m2!, m3!]));
    expect(before).toEqual(['1', '2', '3', '4']);
    const after = await leftAfter('unblocked', 4, (w, [m1, m2, m3]) => {
      w.finish([m2!, m3!]);
      w.finish([m1!]);
    });
    expect(after).toEqual(['4']);
  });

  it('on stopping, acknowledges the finished messages held back behind an unfinished one', async () => {
    const left = await leftAfter('stopping', 4, (w, [, m2, m3]) => {
      w.finish([m2!, m3!]);
      w.ackFinishedAlone();
    });
    expect(left).toEqual(['1', '4']);
  });
});
