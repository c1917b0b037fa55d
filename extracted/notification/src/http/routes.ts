import { Router, type RequestHandler } from 'express';
import { pageQuerySchema, validate } from '@strangler/platform';
import { notificationErrors } from '../notifications/errors.ts';
import { createNotificationSchema } from '../notifications/schemas.ts';
import type { NotificationService } from '../notifications/service.ts';
import { callerId } from './auth.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const isUuid = (value: unknown): value is string => typeof value === 'string' && UUID.test(value);

/**
 * The monolith's notification contract, route for route: POST /api/notifications 202;
 * GET /api/notifications/:id 200; GET /api/notifications?limit&cursor 200 {items, nextCursor}.
 * Validation runs before the recipient check and ids that are not uuids answer 404, as there.
 */
export function notificationRoutes(notifications: NotificationService, auth: RequestHandler): Router {
  const router = Router();

  router.post('/api/notifications', auth, async (req, res) => {
    const input = validate(createNotificationSchema, req.body);
    res.status(202).json(await notifications.create(callerId(res), input));
  });

  router.get('/api/notifications', auth, async (req, res) => {
    const page = validate(pageQuerySchema, req.query);
    res.json(await notifications.list(callerId(res), page));
  });

  router.get('/api/notifications/:id', auth, async (req, res) => {
    const { id } = req.params;
    if (!isUuid(id)) throw notificationErrors.NOTIFICATION_NOT_FOUND();
    res.json(await notifications.get(callerId(res), id));
  });

  return router;
}
