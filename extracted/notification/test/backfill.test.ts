import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { createLogger, createRegistry } from '@strangler/platform';
import { createTestDatabase, startServer } from '@strangler/platform/testing';
import { notification as extraction } from '../../../scripts/src/extractions/notification.ts';
import { backfill, verify } from '../../../scripts/src/sync/index.ts';
import { createApp, FakeNotificationProvider, NotificationDispatcher } from '../src/index.ts';
import { TEST_SECRET, count, testUser } from './helpers.ts';

const monolith = await createTestDatabase('monolith');
const service = await createTestDatabase('notification');
const server = await startServer(createApp({ db: service.knex, authSecret: TEST_SECRET }));

describe("the notification extraction's backfill specs against this schema", () => {
  it('copy the monolith rows column for column, verify finds no difference, and the service serves them unchanged', async () => {
    const user = testUser();
    await monolith.knex('users').insert({ id: user.id, email: 'ada@example.com', name: 'Ada', password_hash: 'x', version: 3 });
    const rows = [
      { id: randomUUID(), user_id: user.id, channel: 'email', template: 'order_placed', data: JSON.stringify({ zeta: [1, { b: 2, a: 1 }], a: 'é', n: 1.5 }), status: 'queued', version: 1 },
      { id: randomUUID(), user_id: user.id, channel: 'sms', template: 'welcome', data: '{}', status: 'sent', provider_message_id: 'sms_x', sent_at: new Date(), version: 2 },
      { id: randomUUID(), user_id: user.id, channel: 'push', template: 'test.undeliverable', data: '{}', status: 'failed', failure_reason: 'Gave up after 5 attempts: no', version: 2 },
    ];
    await monolith.knex('notifications').insert(rows);

    for (const spec of extraction.specs) {
      expect(await backfill(monolith.knex, service.knex, spec)).toMatchObject({ total: spec.name === 'users' ? 1 : 3 });
      expect(await verify(monolith.knex, service.knex, spec, { settleAttempts: 1 })).toMatchObject({ differences: 0 });
    }
    expect(await service.knex('users').where({ id: user.id }).first()).toMatchObject({ email: 'ada@example.com', name: 'Ada', version: 3 });

    // Only the writer of record delivers: backfilled notifications have no dispatch row.
    expect(await count(service.knex, 'notification_dispatch')).toBe(0);
    const provider = new FakeNotificationProvider(service.knex);
    await new NotificationDispatcher(service.knex, provider, createLogger('test'), createRegistry({}, { defaults: false })).drain();
    expect(await provider.calls()).toEqual([]);

    const listed = await request(server.url).get('/api/notifications').set(user.auth);
    expect(listed.status).toBe(200);
    expect(listed.body.items).toHaveLength(3);
    const first = listed.body.items.find((n: { id: string }) => n.id === rows[0]!.id);
    expect(JSON.stringify(first.data)).toBe(JSON.stringify((await monolith.knex('notifications').where({ id: rows[0]!.id }).first()).data));
  });
});
