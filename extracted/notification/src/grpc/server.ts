import { commonErrors, grpc, isAppError, pageQuerySchema, unary, validate, type FieldProblem, type Logger } from '@strangler/platform';
import { z } from 'zod';
import { notificationErrors } from '../notifications/errors.ts';
import type { Notification } from '../notifications/resource.ts';
import { sendNotificationSchema } from '../notifications/schemas.ts';
import type { NotificationService } from '../notifications/service.ts';
import { loadNotificationProto, type GetRequest, type ListByUserRequest, type ListByUserResponse, type NotificationMessage, type SendRequest } from './proto.ts';

export interface GrpcHandlerOptions {
  /**
   * Most ms of work one call may cause, whatever (or whether) deadline the caller set: the
   * database work of a call is bounded by min(the caller's remaining deadline, this). Default 5,000.
   */
  maxWorkMs?: number;
  logger?: Logger;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const toMessage = (n: Notification): NotificationMessage => ({
  id: n.id,
  userId: n.userId,
  channel: n.channel,
  template: n.template,
  dataJson: JSON.stringify(n.data),
  status: n.status,
  failureReason: n.failureReason ?? '',
  createdAt: n.createdAt,
  updatedAt: n.updatedAt,
  sentAt: n.sentAt ?? '',
});

/** `data_json` as the value the HTTP body would carry; unparseable text becomes a string, which the schema refuses. */
function parseData(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** Validates several parts and throws ONE VALIDATION_FAILED listing every problem (gRPC: INVALID_ARGUMENT). */
function validateAll<T extends Record<string, unknown>>(parts: { [K in keyof T]: [z.ZodType<T[K]>, unknown] }): T {
  const out = {} as T;
  const problems: FieldProblem[] = [];
  for (const key of Object.keys(parts) as Array<keyof T>) {
    const [schema, input] = parts[key];
    try {
      out[key] = validate(schema, input) as T[keyof T];
    } catch (err) {
      if (!isAppError(err) || err.code !== 'VALIDATION_FAILED') throw err;
      problems.push(...(err.details as FieldProblem[]));
    }
  }
  if (problems.length) throw commonErrors.VALIDATION_FAILED(undefined, problems);
  return out;
}

const userIdSchema = z.object({ userId: z.uuid() });

/**
 * The gRPC handlers over a NotificationService. Validation is the HTTP API's (same rules, field
 * names and messages: `userId`, `channel`, `template`, `data`, plus `id`), answered as
 * INVALID_ARGUMENT with the problem list in the `x-error-details` trailer; errors carry the
 * HTTP codes in `x-error-code` (platform `unary`). Each call's database work is bounded by the
 * caller's deadline (and `maxWorkMs`): past it, the work is cancelled and rolled back.
 */
export function notificationGrpcHandlers(notifications: NotificationService, { maxWorkMs = 5_000, logger }: GrpcHandlerOptions = {}): grpc.UntypedServiceImplementation {
  const budget = (call: grpc.ServerUnaryCall<unknown, unknown>) => {
    const deadline = call.getDeadline();
    const at = deadline instanceof Date ? deadline.getTime() : deadline;
    const remaining = Number.isFinite(at) ? at - Date.now() : Infinity;
    if (remaining <= 0 || call.cancelled) throw notificationErrors.DEADLINE_EXCEEDED();
    return Math.min(maxWorkMs, remaining);
  };
  const logged =
    <Req, Res>(method: string, fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>) =>
    async (req: Req, call: grpc.ServerUnaryCall<Req, Res>): Promise<Res> => {
      try {
        return await fn(req, call);
      } catch (err) {
        if (!isAppError(err)) logger?.error({ err, method }, 'gRPC call failed');
        throw err;
      }
    };

  return {
    Send: unary(
      logged('Send', async (req: SendRequest, call) => {
        const input = validate(sendNotificationSchema, { id: req.id, userId: req.userId, channel: req.channel, template: req.template, data: parseData(req.dataJson) });
        const { notification } = await notifications.send(input, { timeoutMs: budget(call) });
        return toMessage(notification);
      }),
    ),
    Get: unary(
      logged('Get', async (req: GetRequest, call) => {
        const { caller } = validateAll<{ caller: { userId: string } }>({ caller: [userIdSchema, { userId: req.userId }] });
        if (!UUID.test(req.id)) throw notificationErrors.NOTIFICATION_NOT_FOUND();
        return toMessage(await notifications.get(caller.userId, req.id, { timeoutMs: budget(call) }));
      }),
    ),
    ListByUser: unary(
      logged('ListByUser', async (req: ListByUserRequest, call): Promise<ListByUserResponse> => {
        const { caller, page } = validateAll({
          caller: [userIdSchema, { userId: req.userId }],
          page: [pageQuerySchema, { limit: req.limit === 0 ? undefined : req.limit, cursor: req.cursor === '' ? undefined : req.cursor }],
        });
        const result = await notifications.list(caller.userId, page, { timeoutMs: budget(call) });
        return { items: result.items.map(toMessage), nextCursor: result.nextCursor ?? '' };
      }),
    ),
  };
}

/** A gRPC server with the NotificationService added; the caller binds it (bindGrpcServer) and shuts it down. */
export function createGrpcServer(notifications: NotificationService, options: GrpcHandlerOptions = {}): grpc.Server {
  const server = new grpc.Server();
  server.addService(loadNotificationProto().service, notificationGrpcHandlers(notifications, options));
  return server;
}
