import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { createTestDatabase } from '@strangler/platform/testing';
import { startNotificationService, type RunningNotificationService } from '../src/index.ts';
import { TEST_SECRET } from './helpers.ts';

// Startup while the broker is down. DESIGN.md: every process serves /readyz reporting "its
// database and broker reachable": it runs and says it is not ready. Its HTTP and gRPC APIs need
// only the database, so they must not be down for as long as RabbitMQ is.
const db = await createTestDatabase('notification');

/** An amqp:// URL on a loopback port nothing listens on (a broker that is down). */
async function deadBrokerUrl(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((r) => server.close(r));
  return `amqp://guest:guest@127.0.0.1:${port}`;
}

describe('notification service started while the broker is down', () => {
  it('starts, serves HTTP, and reports not ready on /readyz instead of failing to start', async () => {
    let service: RunningNotificationService | undefined;
    let startError: unknown;
    try {
      service = await startNotificationService({ db: db.newPool('svc'), amqpUrl: await deadBrokerUrl(), queue: 'broker-down.notification', httpPort: 0, grpcPort: 0, authSecret: TEST_SECRET, dispatcher: false });
    } catch (err) {
      startError = err;
    }
    try {
      expect(startError, `startNotificationService rejected: ${String((startError as Error)?.message)}`).toBeUndefined();
      expect((await fetch(`${service!.httpUrl}/healthz`)).status).toBe(200);
      const res = await fetch(`${service!.httpUrl}/readyz`);
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ status: 'not ready', checks: { database: 'ok', broker: expect.stringMatching(/not connected/) } });
    } finally {
      await service?.stop();
    }
  });
});
