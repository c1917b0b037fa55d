import type { RequestHandler, Response } from 'express';
import { bearerToken, commonErrors, verifyToken } from '@strangler/platform';

/**
 * Rejects the request with 401 UNAUTHENTICATED unless it carries a valid bearer token signed
 * with the shared AUTH_TOKEN_SECRET (the monolith issues tokens; a client keeps its token
 * whichever side answers). Same codes and messages as the monolith.
 */
export function authenticate(secret: string): RequestHandler {
  return (req, res, next) => {
    const token = bearerToken(req.get('authorization'));
    if (!token) return next(commonErrors.UNAUTHENTICATED());
    const claims = verifyToken(secret, token);
    if (!claims) return next(commonErrors.UNAUTHENTICATED('The bearer token is invalid or expired; log in again.'));
    res.locals.userId = claims.sub;
    next();
  };
}

/** The authenticated caller's user id (set by `authenticate`). */
export function callerId(res: Response): string {
  const id: unknown = res.locals.userId;
  if (typeof id !== 'string') throw commonErrors.UNAUTHENTICATED();
  return id;
}
