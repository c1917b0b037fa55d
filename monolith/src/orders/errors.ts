import { defineErrors } from '@strangler/platform';

export const orderErrors = defineErrors({
  ORDER_NOT_FOUND: { status: 404, message: 'No such order.' },
  ORDER_ALREADY_CANCELLED: { status: 409, message: 'The order is already cancelled.' },
  ORDER_NOT_CANCELLABLE: { status: 409, message: 'Only placed orders can be cancelled; this one was never paid.' },
  IDEMPOTENCY_KEY_REUSED: { status: 409, message: 'This Idempotency-Key was already used with a different request; use a new key for a new request.' },
});
