import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '@strangler/platform/testing';
import { OutboxListener } from '../src/relay/listener.ts';
import { OUTBOX_CHANNEL } from '../src/schema.ts';
import { waitFor } from './helpers.ts';

const db = await createTestDatabase('monolith');

/** A TCP proxy to Postgres that can go down: it then accepts connections and drops them at once. */
async function droppableProxy() {
  let down = false;
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    accepted++;
    if (down) return void client.destroy();
    const upstream = net.connect(db.connection.port, db.connection.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    get accepted() {
      return accepted;
    },
    goDown() {
      down = true;
      for (const s of sockets) s.destroy();
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

describe('OutboxListener', () => {
  it('stops reconnecting once stopped, even while Postgres is unreachable', async () => {
    const proxy = await droppableProxy();
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
