import { afterAll } from 'vitest';
import { AppError, bindGrpcServer, grpc, unary } from '@strangler/platform';
import { notificationServiceDefinition, type NotificationReply, type SendRequest } from '../src/notifications/grpc-client.ts';

/**
 * A minimal in-test NotificationService: `Send` records each call and keeps one notification per
 * id (idempotent, like the real service). The store outlives a server, so a restarted server
 * "remembers" what it accepted, as the real service does through its database.
 */
export class StandInStore {
  /** Send calls per notification id, repeats included. */
  readonly calls = new Map<string, number>();
  /** What the service accepted: one entry per id. */
  readonly notifications = new Map<string, SendRequest>();
  /** Reply this long after the call with the given number (1-based) for an id: to lose replies. */
  replyDelayMs: (id: string, call: number) => number = () => 0;
  /** Users whose notifications the service refuses with 400 VALIDATION_FAILED. */
  readonly refusedUsers = new Set<string>();

  sendCalls(): number {
    return [...this.calls.values()].reduce((a, b) => a + b, 0);
  }
}

export interface StandInServer {
  port: number;
  /** Stops the server for real: pending calls are cancelled, new connections refused. */
  kill(): void;
}

/** Serves the stand-in on 127.0.0.1:`port` (0 picks one); force-shut at the end of the file. */
export async function startStandIn(store: StandInStore, port = 0): Promise<StandInServer> {
  const server = new grpc.Server();
  server.addService(notificationServiceDefinition(), {
    Send: unary<SendRequest, NotificationReply>(async (req) => {
      const call = (store.calls.get(req.id) ?? 0) + 1;
      store.calls.set(req.id, call);
      if (store.refusedUsers.has(req.userId)) throw new AppError('VALIDATION_FAILED', 400, 'The request is invalid; see details for every problem.', [{ field: 'userId', problem: 'refused by the stand-in' }]);
      if (!store.notifications.has(req.id)) store.notifications.set(req.id, req);
      const delay = store.replyDelayMs(req.id, call);
      if (delay) await new Promise((r) => setTimeout(r, delay));
      const n = store.notifications.get(req.id)!;
      const now = new Date().toISOString();
      return { ...n, status: 'queued', failureReason: '', createdAt: now, updatedAt: now, sentAt: '' };
    }),
  });
  const bound = await bindGrpcServer(server, port);
  let killed = false;
  const kill = () => {
    if (killed) return;
    killed = true;
    server.forceShutdown();
  };
  afterAll(kill);
  return { port: bound, kill };
}
