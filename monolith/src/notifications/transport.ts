import type { Knex } from 'knex';
import type { Logger, Registry } from '@strangler/platform';
import { NotificationForwarder, type ForwarderOptions } from './forwarder.ts';
import { createNotificationClient } from './grpc-client.ts';
import { GrpcNotificationPort } from './grpc-port.ts';
import type { NotificationPort } from './port.ts';

/**
 * Values of NOTIFICATION_TRANSPORT: `in-process` (the monolith's own module is the writer of
 * record) or `grpc` (the extracted notification service is; requests are queued in
 * `notification_requests` and forwarded to its `Send`).
 */
export const NOTIFICATION_TRANSPORTS = ['in-process', 'grpc'] as const;
export type NotificationTransport = (typeof NOTIFICATION_TRANSPORTS)[number];

/** Settings of the gRPC transport; every field has a default that runs locally. */
export interface GrpcTransportOptions {
  /** The service's gRPC address, `host:port` (default `127.0.0.1:50054`). */
  target?: string;
  /** Deadline of one Send attempt in ms (default 1,000). */
  deadlineMs?: number;
  /** Send attempts per forwarding try, the first included, on UNAVAILABLE/DEADLINE_EXCEEDED (default 3). */
  attempts?: number;
  /** How long the breaker stays open before its half-open trial, in ms (default 5,000). */
  breakerResetMs?: number;
  forwarder?: ForwarderOptions;
}

export interface NotificationTransportDeps {
  transport: NotificationTransport;
  grpc?: GrpcTransportOptions;
  /** The in-process port (the monolith's notifications module). */
  inProcess: NotificationPort;
  db: Knex;
  logger: Logger;
  registry: Registry;
}

export interface NotificationTransportParts {
  /** What orders call. */
  port: NotificationPort;
  /**
   * The background forwarder to the service (not started). With `in-process` too: requests
   * queued while the transport was `grpc` still reach the service after a switch back (a
   * rollback), instead of waiting in `notification_requests` for the next switch to `grpc`.
   * Nothing new is queued then, and an empty queue costs one indexed poll per interval.
   */
  forwarder: NotificationForwarder;
}

/** The NotificationPort the orders module uses, chosen by configuration (branch by abstraction). */
export function createNotificationTransport(deps: NotificationTransportDeps): NotificationTransportParts {
  const g = deps.grpc ?? {};
  // The gRPC channel connects on the first Send: an in-process monolith with nothing queued never opens it.
  const client = createNotificationClient({
    target: g.target ?? '127.0.0.1:50054',
    deadlineMs: g.deadlineMs ?? 1_000,
    attempts: g.attempts ?? 3,
    breakerResetMs: g.breakerResetMs ?? 5_000,
  });
  const forwarder = new NotificationForwarder(deps.db, client, deps.logger, deps.registry, g.forwarder);
  switch (deps.transport) {
    case 'in-process':
      return { port: deps.inProcess, forwarder };
    case 'grpc':
      return { port: new GrpcNotificationPort(() => forwarder.wake()), forwarder };
  }
}
