import { Router, type RequestHandler } from 'express';
import { validate } from '@strangler/platform';
import { callerId } from '../shared/auth.ts';
import { isUuid } from '../shared/ids.ts';
import { pageQuerySchema } from '../shared/pagination.ts';
import { validateRequest } from '../shared/validation.ts';
import { orderErrors } from './errors.ts';
import { cancelOrderSchema, placeOrderHeadersSchema, placeOrderSchema } from './schemas.ts';
import type { OrderService } from './service.ts';

/** Set on a response that replays the stored answer to a repeated Idempotency-Key. */
export const REPLAYED_HEADER = 'idempotent-replayed';

export function orderRoutes(orders: OrderService, auth: RequestHandler): Router {
  const router = Router();

  router.post('/api/orders', auth, async (req, res) => {
    const { body, headers } = validateRequest({
      body: { schema: placeOrderSchema, input: req.body },
      headers: { schema: placeOrderHeadersSchema, input: { 'idempotency-key': req.get('idempotency-key') }, prefix: 'header ' },
    });
    const result = await orders.place(callerId(res), body, headers['idempotency-key']);
    if (result.replayed) res.setHeader(REPLAYED_HEADER, 'true');
    res.status(result.status).json(result.body);
  });

  router.get('/api/orders', auth, async (req, res) => {
    const page = validate(pageQuerySchema, req.query);
    res.json(await orders.list(callerId(res), page));
  });

  router.get('/api/orders/:id', auth, async (req, res) => {
    if (!isUuid(req.params.id)) throw orderErrors.ORDER_NOT_FOUND();
    res.json(await orders.get(callerId(res), req.params.id));
  });

  router.post('/api/orders/:id/cancel', auth, async (req, res) => {
    if (!isUuid(req.params.id)) throw orderErrors.ORDER_NOT_FOUND();
    validate(cancelOrderSchema, req.body);
    res.json(await orders.cancel(callerId(res), req.params.id));
  });

  return router;
}
