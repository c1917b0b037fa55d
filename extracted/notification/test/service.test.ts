import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { grpc, ResilientGrpcClient } from '@strangler/platform';
import { createTestBroker, createTestDatabase } from '@strangler/platform/testing';
import { loadNotificationProto, startNotificationService, type NotificationMessage } from '../src/index.ts';
import { TEST_SECRET, notificationBody, testUser, waitFor } from './helpers.ts';

const db = await createTestDatabase('notification');
const broker = await createTestBroker();
const service = await startNotificationService({
  db: db.newPool('service'),
  amqpUrl: broker.url,
  exchange: broker.exchange,
  queue: `${broker.prefix}.notification`,
  httpPort: 0,
  grpcPort: 0,
  authSecret: TEST_SECRET,
  dispatcher: { pollIntervalMs: 20 },
});
afterAll(() => service.stop());
const client = new ResilientGrpcClient(new (loadNotificationProto())(service.grpcAddress, grpc.credentials.createInsecure()), 'notification', { attempts: 1 });
afterAll(() => client.close());

const status = async (id: string) => (await db.knex('notifications').where({ id }).first())?.status;

describe('startNotificationService (in-process, ports 0)', () => {
  it('serves HTTP and gRPC on one database and delivers in the background', async () => {
    const user = testUser();
    const res = await fetch(`${service.httpUrl}/api/notifications`, { method: 'POST', headers: { 'content-type': 'application/json', ...user.auth }, body: JSON.stringify(notificationBody(user)) });
    expect(res.status).toBe(202);
    const viaHttp = (await res.json()) as { id: string };
    const viaGrpc = await client.call<object, NotificationMessage>('Send', { id: randomUUID(), userId: user.id, channel: 'push', template: 'welcome', dataJson: '{}' });
    await waitFor('both delivered', async () => (await status(viaHttp.id)) === 'sent' && (await status(viaGrpc.id)) === 'sent', 5_000);
    const listed = await fetch(`${service.httpUrl}/api/notifications`, { headers: user.auth });
    expect(((await listed.json()) as { items: unknown[] }).items).toHaveLength(2);
  });

  it('is ready once its database and broker answer', async () => {
    await waitFor('ready', async () => (await fetch(`${service.httpUrl}/readyz`)).status === 200, 10_000);
    const res = await fetch(`${service.httpUrl}/readyz`);
    expect(await res.json()).toEqual({ status: 'ready', checks: { database: 'ok', broker: 'ok' } });
  });

  it('stops idempotently, closing its servers', async () => {
    const stopping = [service.stop(), service.stop()];
    await Promise.all(stopping);
    await expect(fetch(`${service.httpUrl}/healthz`)).rejects.toThrow();
  });
});
