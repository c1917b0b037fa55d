import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '@strangler/platform/testing';
import { OutboxListener } from '../src/relay/listener.ts';
import { OUTBOX_CHANNEL } from '../src/schema.ts';
import { tcpProxy, waitFor } from './helpers.ts';

const db = await createTestDatabase('monolith');

describe('OutboxListener', () => {
  it('stops reconnecting once stopped, even while Postgres is unreachable', async () => {
    const proxy = await tcpProxy(db.connection.host, db.connection.port);
    try {
      let listening = 0;
      let reconnects = 0;
      const errors: unknown[] = [];
      const listener = new OutboxListener({
        connection: { ...db.connection, host: '127.0.0.1', port: proxy.port },
        applicationName: 'listener-test',
        channel: OUTBOX_CHANNEL,
        onNotify: () => {},
        onListening: () => listening++,
        onReconnecting: () => reconnects++,
        onError: (err) => errors.push(err),
      });
      listener.start();
      await waitFor('listening', () => listening === 1);
      proxy.goDown();
      await waitFor('reconnect attempts', () => reconnects >= 2, 10_000);
      await listener.stop();
      const attempts = proxy.accepted;
      errors.length = 0;
      // The next delays would be under 1 s and 2 s: a loop still running would try within 4 s.
      await new Promise((r) => setTimeout(r, 4_000));
      expect(proxy.accepted, 'connection attempts after stop()').toBe(attempts);
      expect(errors, 'errors reported after stop()').toEqual([]);
    } finally {
      await proxy.close();
    }
  });
});
