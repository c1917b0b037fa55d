import { defineErrors } from '@strangler/platform';

export const paymentErrors = defineErrors({
  PAYMENT_NOT_FOUND: { status: 404, message: 'No such payment.' },
  PAYMENT_DECLINED: { status: 402, message: 'The payment was declined; the order was kept with status payment_failed.' },
  PAYMENT_PROVIDER_TIMEOUT: { status: 504, message: 'The payment provider did not answer in time; nothing was stored. It is safe to retry (with the same Idempotency-Key for orders).' },
  PAYMENT_NOT_REFUNDABLE: { status: 409, message: 'This payment has nothing left to refund.' },
  REFUND_EXCEEDS_PAYMENT: { status: 409, message: 'The refund is larger than what is left to refund on this payment.' },
});
