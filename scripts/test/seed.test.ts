import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '@strangler/platform';
import { createTestDatabase } from '@strangler/platform/testing';
import { createApp } from '@strangler/monolith';
import { SEED_PASSWORD } from '../src/seed.ts';

const run = promisify(execFile);
const db = await createTestDatabase('monolith');

const count = async (table: string, where: Record<string, unknown> = {}) => Number((await db.knex(table).where(where).count({ n: '*' }))[0]!.n);

describe('npm run seed', () => {
  it('imports users, orders, payments and notifications at version 1 without outbox events, and a seeded user can log in', async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'scripts/src/seed.ts', '--users', '50', '--orders', '200'], {
      cwd: repoRoot,
      env: { ...process.env, MONOLITH_DB: db.name, LOG_LEVEL: 'silent' },
      timeout: 60_000,
    });
    expect(stdout).toMatch(/^Seeded 50 users, 200 orders \(\d+ items, 200 payments, \d+ refunds, \d+ notifications\) into "t_\w+" in \d+\.\d\d s\. No outbox events/m);

    expect(await count('users')).toBe(50);
    expect(await count('orders')).toBe(200);
    expect(await count('payments')).toBe(200);
    expect(await count('order_items')).toBeGreaterThanOrEqual(200);
    const cancelled = await count('orders', { status: 'cancelled' });
    expect(await count('refunds')).toBe(cancelled);
    expect(await count('payments', { status: 'refunded' })).toBe(cancelled);
    expect(await count('payments', { status: 'declined' })).toBe(await count('orders', { status: 'payment_failed' }));
    expect(await count('notifications')).toBe(200 + cancelled);
    expect(await count('notifications', { status: 'sent' })).toBe(200 + cancelled);
    expect(await count('notification_dispatch')).toBe(0);
    expect(await count('outbox')).toBe(0);
    for (const table of ['users', 'orders', 'payments', 'notifications']) expect(await db.knex(table).whereNot({ version: 1 }).first(), table).toBeUndefined();
    const [{ mismatched }] = (await db.knex.raw(`
      select count(*)::int as mismatched from orders o
       where o.total_cents <> (select sum(quantity * unit_price_cents) from order_items i where i.order_id = o.id)
          or o.total_cents <> (select amount_cents from payments p where p.order_id = o.id)`)).rows;
    expect(mismatched).toBe(0);

    const user = await db.knex('users').orderBy('email').first();
    const { app } = createApp({ db: db.knex });
    const session = await request(app).post('/api/sessions').send({ email: user.email, password: SEED_PASSWORD });
    expect(session.status).toBe(201);
    const orders = await request(app).get('/api/orders').query({ limit: 100 }).set('Authorization', `Bearer ${session.body.token}`);
    expect(orders.status).toBe(200);
    expect(orders.body.items.length).toBe(await count('orders', { user_id: user.id }));
  });

  it('refuses a count that is not a whole number with exit code 2 and the usage', async () => {
    const failed = await run(process.execPath, ['--import', 'tsx', 'scripts/src/seed.ts', '--users', 'lots'], { cwd: repoRoot, env: { ...process.env, MONOLITH_DB: db.name }, timeout: 30_000 }).catch((err: { code: number; stderr: string }) => err);
    expect(failed).toMatchObject({ code: 2, stderr: expect.stringMatching(/--users must be a whole number[\s\S]*Usage: npm run seed/) });
  });
});
