import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadProto, type grpc } from '@strangler/platform';

/** The service's proto (package strangler.notification.v1), for clients in other packages too. */
export const NOTIFICATION_PROTO_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../proto/notification.proto');

export interface NotificationMessage {
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
export interface SendRequest {
  id: string;
  userId: string;
  channel: string;
  template: string;
  dataJson: string;
}
export interface GetRequest {
  id: string;
  userId: string;
}
export interface ListByUserRequest {
  userId: string;
  limit: number;
  cursor: string;
}
export interface ListByUserResponse {
  items: NotificationMessage[];
  nextCursor: string;
}

type ServiceClientCtor = grpc.ServiceClientConstructor;

/** `NotificationService` of the proto: `.service` for servers, `new (address, credentials)` for clients. */
export function loadNotificationProto(): ServiceClientCtor {
  const pkg = loadProto(NOTIFICATION_PROTO_PATH) as unknown as { strangler: { notification: { v1: { NotificationService: ServiceClientCtor } } } };
  return pkg.strangler.notification.v1.NotificationService;
}
