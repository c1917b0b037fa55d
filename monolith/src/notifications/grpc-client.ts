import path from 'node:path';
import { grpc, loadProto, repoRoot, ResilientGrpcClient } from '@strangler/platform';

/**
 * The contract of the extracted notification service. The monolith reads the .proto the service
 * publishes (a contract file, not code: the two never import each other).
 */
export const NOTIFICATION_PROTO = path.join(repoRoot, 'extracted/notification/proto/notification.proto');

/** `SendRequest` as proto-loader hands it over (camelCase fields). */
export interface SendRequest {
  /** Chosen by the caller; the service's idempotency key. */
  id: string;
  userId: string;
  channel: string;
  template: string;
  dataJson: string;
}

/** `Notification` reply (empty strings for unset optional fields). */
export interface NotificationReply {
  id: string;
  userId: string;
  channel: string;
  template: string;
  dataJson: string;
  status: string;
  failureReason: string;
  createdAt: string;
  updatedAt: string;
  sentAt: string;
}

export interface NotificationClientOptions {
  /** gRPC target of the service, `host:port`. */
  target: string;
  /** Deadline of one attempt in ms. */
  deadlineMs: number;
  /** Attempts per call, the first included (transport failures only; Send is idempotent on its id). */
  attempts: number;
  /** How long the breaker stays open before one trial call, in ms. */
  breakerResetMs: number;
}

/** The service definition, e.g. to serve it in tests: `server.addService(notificationServiceDefinition(), impl)`. */
export function notificationServiceDefinition(): grpc.ServiceDefinition {
  return notificationServiceClass().service;
}

function notificationServiceClass(): grpc.ServiceClientConstructor {
  const pkg = loadProto(NOTIFICATION_PROTO) as unknown as { strangler: { notification: { v1: { NotificationService: grpc.ServiceClientConstructor } } } };
  return pkg.strangler.notification.v1.NotificationService;
}

/**
 * ONE resilient client for the notification service, created once per process: every call has a
 * deadline, transport failures are retried with jittered backoff (50 ms base, 1 s cap), and one
 * breaker guards the upstream.
 *
 * Why the channel's reconnect backoff is capped at `breakerResetMs`: grpc-js backs off
 * reconnecting by 1.6x per failure up to 120 s, so after a long outage a restarted service could
 * wait two minutes for the channel to try again while the breaker's trial calls fail fast. With
 * the cap (5 s by default) the channel is back within one breaker period of the service.
 */
export function createNotificationClient(options: NotificationClientOptions): ResilientGrpcClient {
  const Service = notificationServiceClass();
  const channel = new Service(options.target, grpc.credentials.createInsecure(), {
    'grpc.initial_reconnect_backoff_ms': Math.min(1_000, options.breakerResetMs),
    'grpc.max_reconnect_backoff_ms': options.breakerResetMs,
  });
  return new ResilientGrpcClient(
    channel,
    'notification',
    { deadlineMs: options.deadlineMs, attempts: options.attempts, backoff: { baseMs: 50, maxMs: 1_000 } },
    { resetTimeout: options.breakerResetMs },
  );
}
