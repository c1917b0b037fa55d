import { defineErrors } from '@strangler/platform';

/** Coded errors of the users module (shared codes such as VALIDATION_FAILED come from platform). */
export const userErrors = defineErrors({
  USER_NOT_FOUND: { status: 404, message: 'No such user.' },
  EMAIL_TAKEN: { status: 409, message: 'A user with this email address already exists.' },
  INVALID_CREDENTIALS: { status: 401, message: 'The email address or password is wrong.' },
});
