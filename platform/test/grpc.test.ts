import { afterAll, describe, expect, it } from 'vitest';
import {
  AppError,
  ResilientGrpcClient,
  bindGrpcServer,
  currentContext,
  grpc,
  listen,
  listenFailure,
  runWithContext,
  shutdownGrpcServer,
  unary,
} from '../src/index.ts';
import { echoProto } from './fixtures/echo.ts';

let calls = 0;

async function startServer(port = 0) {
  const server = new grpc.Server();
  server.addService(echoProto.echo.Echo.service, {
    say: unary(async (req: { message: string; failWith: string; delayMs: number }) => {
      calls++;
      if (req.delayMs) await new Promise((r) => setTimeout(r, req.delayMs));
      if (req.failWith) throw new AppError(req.failWith, 404, 'nothing here', { id: 'x' });
      return { message: req.message, requestId: currentContext()?.requestId ?? '' };
    }),
  });
  const bound = await bindGrpcServer(server, port);
  return { server, port: bound };
}

const first = await startServer();
afterAll(() => shutdownGrpcServer(first.server, 100));

const newClient = (port: number, opts = {}) => {
  const client = new ResilientGrpcClient(new echoProto.echo.Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure()), 'echo', opts, { resetTimeout: 60_000 });
  afterAll(() => client.close());
  return client;
};

describe('ResilientGrpcClient', () => {
  it('carries the request id to the server in metadata', async () => {
    const client = newClient(first.port);
    const reply = await runWithContext({ requestId: 'req-123' }, () => client.call<object, { message: string; requestId: string }>('say', { message: 'hi' }));
    expect(reply).toEqual({ message: 'hi', requestId: 'req-123' });
  });

  it('rebuilds the coded application error without retrying it or opening the breaker', async () => {
    const client = newClient(first.port);
    const before = calls;
    for (let i = 0; i < 8; i++) {
      await expect(client.call('say', { message: 'x', failWith: 'THING_NOT_FOUND' })).rejects.toMatchObject({ code: 'THING_NOT_FOUND', status: 404, details: { id: 'x' } });
    }
    expect(calls - before).toBe(8);
    expect(client.breaker.opened).toBe(false);
  });

  it('gives up at the deadline with a 504, retrying the configured number of times', async () => {
    const client = newClient(first.port, { deadlineMs: 50, attempts: 2, backoff: { baseMs: 1, maxMs: 1 } });
    const before = calls;
    await expect(client.call('say', { message: 'slow', delayMs: 300 })).rejects.toMatchObject({ status: 504, code: 'UPSTREAM_TIMEOUT' });
    expect(calls - before).toBe(2);
  });

  it('opens the breaker when the service is down, then fails fast without network calls', async () => {
    const down = await startServer();
    await shutdownGrpcServer(down.server, 10);
    const client = newClient(down.port, { deadlineMs: 200, attempts: 1 });
    for (let i = 0; i < 5; i++) await expect(client.call('say', { message: 'x' })).rejects.toMatchObject({ status: 503 });
    expect(client.breaker.opened).toBe(true);
    const started = Date.now();
    await expect(client.call('say', { message: 'x' })).rejects.toMatchObject({ code: 'UNAVAILABLE', status: 503 });
    expect(Date.now() - started).toBeLessThan(50);
  });
});

describe('a server whose port is taken', () => {
  it('fails with the port and the setting to change, for gRPC as for HTTP (listenFailure)', async () => {
    const grpcError = await startServer(first.port).catch((e: unknown) => e);
    expect(grpcError).toMatchObject({ code: 'EADDRINUSE', syscall: 'listen', address: '127.0.0.1', port: first.port });
    expect(listenFailure(grpcError, [[first.port, 'GRPC_PORT']])).toBe(`Cannot listen on 127.0.0.1:${first.port}: the port is in use (another copy of this process, or another program?). Choose another with GRPC_PORT.`);

    const taken = await listen(() => {}, 0);
    try {
      const httpError = await listen(() => {}, taken.port).catch((e: unknown) => e);
      expect(listenFailure(httpError, [[taken.port, 'PORT']])).toMatch(new RegExp(`^Cannot listen on 127\\.0\\.0\\.1:${taken.port}: the port is in use .* Choose another with PORT\\.$`));
    } finally {
      await taken.close(100);
    }
    expect(listenFailure(new Error('something else'), [])).toBeNull();
    // The same code from anything but a listen (connecting to a database's socket, say) is not a listener problem.
    expect(listenFailure(Object.assign(new Error('connect EACCES /var/run/postgresql/.s.PGSQL.5432'), { code: 'EACCES', syscall: 'connect' }), [])).toBeNull();
  });
});
