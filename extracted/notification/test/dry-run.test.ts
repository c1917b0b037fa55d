import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { createLogger, createRegistry, DRY_RUN_HEADER } from '@strangler/platform';
import { createTestDatabase, startServer } from '@strangler/platform/testing';
import { createApp, FakeNotificationProvider, NotificationDispatcher } from '../src/index.ts';
import { ISO, TEST_SECRET, UUID, count, notificationBody, testUser } from './helpers.ts';

const db = await createTestDatabase('notification');
const server = await startServer(createApp({ db: db.knex, authSecret: TEST_SECRET }));
const api = () => request(server.url);
const provider = new FakeNotificationProvider(db.knex);
const dispatcher = new NotificationDispatcher(db.knex, provider, createLogger('test'), createRegistry({}, { defaults: false }), { retryBaseMs: 0 });

describe(`dry runs (${DRY_RUN_HEADER}: 1)`, () => {
  it('answer a POST exactly like a real one but persist nothing: no row, no outbox event, no dispatch, no send', async () => {
    const user = testUser();
    const dry = await api().post('/api/notifications').set(user.auth).set(DRY_RUN_HEADER, '1').send(notificationBody(user));
    const real = await api().post('/api/notifications').set(user.auth).send(notificationBody(user));
    expect(dry.status).toBe(202);
    expect(dry.body).toEqual({ ...real.body, id: expect.stringMatching(UUID), createdAt: expect.stringMatching(ISO), updatedAt: dry.body.createdAt });
    expect(dry.body.id).not.toBe(real.body.id);

    expect(await count(db.knex, 'notifications', { id: dry.body.id })).toBe(0);
    expect(await count(db.knex, 'outbox', { aggregate_id: dry.body.id })).toBe(0);
    expect(await count(db.knex, 'notification_dispatch', { notification_id: dry.body.id })).toBe(0);
    expect((await api().get(`/api/notifications/${dry.body.id}`).set(user.auth)).status).toBe(404);

    await dispatcher.drain();
    expect(await provider.calls([dry.body.id])).toEqual([]);
    expect((await provider.calls([real.body.id])).map((c) => c.outcome)).toEqual(['delivered']);
  });

  it('answer refusals exactly like real requests', async () => {
    const [a, b] = [testUser(), testUser()];
    const events = await count(db.knex, 'outbox');
    for (const body of [notificationBody(a, { userId: b.id }), { channel: 'fax' }]) {
      const dry = await api().post('/api/notifications').set(a.auth).set(DRY_RUN_HEADER, '1').send(body);
      const real = await api().post('/api/notifications').set(a.auth).send(body);
      expect([dry.status, dry.body]).toEqual([real.status, real.body]);
    }
    expect(await count(db.knex, 'outbox')).toBe(events);
  });

  it('leave reads unchanged', async () => {
    const user = testUser();
    const created = (await api().post('/api/notifications').set(user.auth).send(notificationBody(user))).body;
    const dry = await api().get('/api/notifications').set(user.auth).set(DRY_RUN_HEADER, '1');
    expect(dry.body).toEqual({ items: [created], nextCursor: null });
  });
});
