import request from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { createDb, pgConnection } from '@strangler/platform';
import { testEnv } from '@strangler/platform/testing';
import { createApp } from '../src/app.ts';
import { registerUser, setupMonolith } from './helpers.ts';

const m = await setupMonolith();
const { app } = m;

describe('operational endpoints', () => {
  it('answers /healthz and /readyz when the database is reachable', async () => {
    expect((await request(app).get('/healthz')).body).toEqual({ status: 'ok' });
    const ready = await request(app).get('/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ status: 'ready', checks: { database: 'ok' } });
  });

  it('answers /readyz with 503 when the database is not reachable, while /healthz stays up', async () => {
    const missing = createDb(pgConnection(testEnv(), 'no_such_database_here'), { applicationName: 'test-missing' });
    afterAll(() => missing.destroy());
    const down = createApp({ db: missing });
    const ready = await request(down.app).get('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ status: 'not ready', checks: { database: expect.not.stringMatching(/^ok$/) } });
    expect((await request(down.app).get('/healthz')).status).toBe(200);
  });

  it('exposes Prometheus metrics labelled by route pattern, not by raw path', async () => {
    const user = await registerUser(app);
    await request(app).get(`/api/users/${user.id}`).set(user.auth).expect(200);
    const res = await request(app).get('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expect(res.text).toMatch(/http_requests_total\{method="GET",route="\/api\/users\/:id",status="200",service="monolith"\} 1/);
    expect(res.text).toMatch(/http_request_duration_seconds_count\{[^}]*method="POST",route="\/api\/users",status="201"[^}]*\} 1/);
    expect(res.text).not.toContain(user.id);
    expect(res.text).toContain('process_cpu_seconds_total');
  });

  it('answers unknown routes with 404 ROUTE_NOT_FOUND and echoes a sane x-request-id', async () => {
    const res = await request(app).get('/api/unknown').set('x-request-id', 'req-123');
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe('ROUTE_NOT_FOUND');
    expect(res.headers['x-request-id']).toBe('req-123');
    const generated = await request(app).get('/healthz').set('x-request-id', 'bad id with spaces');
    expect(generated.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });
});
