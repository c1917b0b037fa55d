import { defineErrors } from '@strangler/platform';

export const notificationErrors = defineErrors({
  NOTIFICATION_NOT_FOUND: { status: 404, message: 'No such notification.' },
  NOTIFICATION_RECIPIENT_FORBIDDEN: { status: 403, message: 'You may only send notifications to yourself: userId must be your own id.' },
});
