import { defineErrors } from '@strangler/platform';

export const notificationErrors = defineErrors({
  NOTIFICATION_NOT_FOUND: { status: 404, message: 'No such notification.' },
  NOTIFICATION_RECIPIENT_FORBIDDEN: { status: 403, message: 'You may only send notifications to yourself: userId must be your own id.' },
  NOTIFICATION_ID_CONFLICT: {
    status: 409,
    message: 'A different notification already has this id: retry with the same request, or choose a new id for a new notification.',
  },
  DEADLINE_EXCEEDED: { status: 504, message: "The caller's deadline passed before the work finished; nothing was written. Retry with the same id." },
});
