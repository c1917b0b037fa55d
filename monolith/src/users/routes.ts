import { Router, type RequestHandler } from 'express';
import { validate } from '@strangler/platform';
import { callerId } from '../shared/auth.ts';
import { isUuid } from '../shared/ids.ts';
import { userErrors } from './errors.ts';
import { loginSchema, registerSchema, updateUserSchema } from './schemas.ts';
import type { UserService } from './service.ts';

export function userRoutes(users: UserService, auth: RequestHandler): Router {
  const router = Router();

  router.post('/api/users', async (req, res) => {
    const input = validate(registerSchema, req.body);
    res.status(201).json(await users.register(input));
  });

  router.post('/api/sessions', async (req, res) => {
    const input = validate(loginSchema, req.body);
    res.status(201).json(await users.login(input.email, input.password));
  });

  router.get('/api/users/:id', auth, async (req, res) => {
    if (!isUuid(req.params.id)) throw userErrors.USER_NOT_FOUND();
    res.json(await users.get(callerId(res), req.params.id));
  });

  router.patch('/api/users/:id', auth, async (req, res) => {
    if (!isUuid(req.params.id)) throw userErrors.USER_NOT_FOUND();
    const input = validate(updateUserSchema, req.body);
    res.json(await users.update(callerId(res), req.params.id, input));
  });

  return router;
}
