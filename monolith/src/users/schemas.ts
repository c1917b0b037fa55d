import { z } from 'zod';

const email = z.string().trim().max(254).pipe(z.email());
const name = z.string().trim().min(1).max(200);

export const registerSchema = z.strictObject({
  email,
  name,
  password: z.string().min(8).max(200),
});

export const loginSchema = z.strictObject({
  email: z.string().trim().min(1).max(254),
  password: z.string().min(1).max(200),
});

export const updateUserSchema = z
  .strictObject({ name: name.optional(), email: email.optional() })
  .refine((v) => v.name !== undefined || v.email !== undefined, { message: 'Send at least one of name, email.' });

export type RegisterInput = z.infer<typeof registerSchema>;
export type UpdateUserInput = z.infer<typeof updateUserSchema>;
