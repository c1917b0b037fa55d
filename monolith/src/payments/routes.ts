import { Router, type RequestHandler } from 'express';
import { validate } from '@strangler/platform';
import { callerId } from '../shared/auth.ts';
import { isUuid } from '../shared/ids.ts';
import { paymentErrors } from './errors.ts';
import { paymentListQuerySchema, refundSchema } from './schemas.ts';
import type { PaymentService } from './service.ts';

export function paymentRoutes(payments: PaymentService, auth: RequestHandler): Router {
  const router = Router();

  router.get('/api/payments', auth, async (req, res) => {
    const { orderId } = validate(paymentListQuerySchema, req.query);
    res.json(await payments.listOfOrder(callerId(res), orderId));
  });

  router.get('/api/payments/:id', auth, async (req, res) => {
    if (!isUuid(req.params.id)) throw paymentErrors.PAYMENT_NOT_FOUND();
    res.json(await payments.get(callerId(res), req.params.id));
  });

  router.post('/api/payments/:id/refunds', auth, async (req, res) => {
    if (!isUuid(req.params.id)) throw paymentErrors.PAYMENT_NOT_FOUND();
    const { amountCents } = validate(refundSchema, req.body ?? {});
    res.status(201).json(await payments.refund(callerId(res), req.params.id, amountCents));
  });

  return router;
}
