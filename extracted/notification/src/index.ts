export { createApp, type AppDeps } from './app.ts';
export { loadNotificationConfig, notificationEnv, type NotificationConfig } from './config.ts';
export { startNotificationService, type NotificationServiceOptions, type RunningNotificationService } from './service.ts';
export { NotificationService, type SendResult } from './notifications/service.ts';
export { notificationErrors } from './notifications/errors.ts';
export { CHANNELS, MAX_DATA_BYTES, createNotificationSchema, sendNotificationSchema, type Channel, type NotificationStatus } from './notifications/schemas.ts';
export type { Notification, NotificationState } from './notifications/resource.ts';
export { createGrpcServer, notificationGrpcHandlers, type GrpcHandlerOptions } from './grpc/server.ts';
export {
  NOTIFICATION_PROTO_PATH,
  loadNotificationProto,
  type GetRequest,
  type ListByUserRequest,
  type ListByUserResponse,
  type NotificationMessage,
  type SendRequest,
} from './grpc/proto.ts';
export { NotificationDispatcher, type DispatcherOptions, type DispatchStats } from './dispatch/dispatcher.ts';
export { FakeNotificationProvider, UNDELIVERABLE_TEMPLATE, type NotificationProvider, type OutgoingNotification, type ProviderLogEntry } from './dispatch/provider.ts';
export {
  NOTIFICATION_BINDINGS,
  NOTIFICATION_QUEUE,
  bindNotificationQueue,
  startNotificationConsumer,
  type NotificationConsumer,
  type NotificationConsumerOptions,
  type QueueOptions,
} from './events/consumer.ts';
export { notificationEventHandler } from './events/handler.ts';
export { ORIGIN } from './events/publish.ts';

export { bindNotificationQueueFromEnv } from './events/bind-from-env.ts';
