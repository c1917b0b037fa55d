import { Router, type RequestHandler } from 'express';
import { validate } from '@strangler/platform';
import { callerId } from '../shared/auth.ts';
import { isUuid } from '../shared/ids.ts';
import { pageQuerySchema } from '../shared/pagination.ts';
import { notificationErrors } from './errors.ts';
import { createNotificationSchema } from './schemas.ts';
import type { NotificationService } from './service.ts';

/**
 * POST /api/notifications 202 notification; GET /api/notifications/:id 200 notification;
 * GET /api/notifications?limit&cursor 200 {items, nextCursor}. The extracted notification
 * service answers these byte for byte (after normalising ids and times).
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
    if (!isUuid(req.params.id)) throw notificationErrors.NOTIFICATION_NOT_FOUND();
    res.json(await notifications.get(callerId(res), req.params.id));
  });

  return router;
}
