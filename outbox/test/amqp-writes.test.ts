import { afterAll, describe, expect, it } from 'vitest';
import { createTestBroker } from '@strangler/platform/testing';
import type { ConsumeMessage } from '@strangler/platform';
import { coalesceWrites } from '../src/amqp-writes.ts';
import { waitFor } from './helpers.ts';

const broker = await createTestBroker();
const conn = await broker.connect('amqp-writes');
afterAll(() => conn.close());

describe('coalesceWrites', () => {
  it('takes hold with the installed amqplib, and frames still go out whole and in order', async () => {
    // False would mean an amqplib upgrade moved the internals it relies on: the relay and the
    // consumer still work, but every frame is a write of its own again (bench/outbox.ts).
    expect(coalesceWrites(conn)).toBe(true);
    const ch = await conn.createConfirmChannel();
    const queue = `${broker.prefix}.coalesced`;
    await ch.assertQueue(queue, { durable: true });
    const n = 2_000;
    for (let i = 0; i < n; i++) ch.sendToQueue(queue, Buffer.from(`${i}:${'x'.repeat(i % 300)}`), { persistent: true, headers: { i } });
    await ch.waitForConfirms();
    const got: string[] = [];
    const sub = await conn.createChannel();
    await sub.consume(queue, (m: ConsumeMessage | null) => {
      if (!m) return;
      got.push(m.content.toString());
      sub.ack(m);
    });
    await waitFor(`${n} messages back`, () => got.length === n, 10_000);
    expect(got).toEqual(Array.from({ length: n }, (_, i) => `${i}:${'x'.repeat(i % 300)}`));
    await sub.close();
    await ch.deleteQueue(queue);
    await ch.close();
  });
});
