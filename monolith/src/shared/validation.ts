import type { z } from 'zod';
import { commonErrors, isAppError, validate, type FieldProblem } from '@strangler/platform';

export interface ValidationPart<S extends z.ZodType = z.ZodType> {
  schema: S;
  input: unknown;
  /** Prefix for field names outside the body, e.g. `query.` or `header `. */
  prefix?: string;
}

type Parsed<P extends Record<string, ValidationPart>> = { [K in keyof P]: z.infer<P[K]['schema']> };

/**
 * Validates several parts of a request (body, query, headers) with platform `validate` and
 * throws ONE VALIDATION_FAILED listing every problem of every part.
 */
export function validateRequest<P extends Record<string, ValidationPart>>(parts: P): Parsed<P> {
  const out = {} as Record<string, unknown>;
  const problems: FieldProblem[] = [];
  for (const [name, part] of Object.entries(parts)) {
    try {
      out[name] = validate(part.schema, part.input);
    } catch (err) {
      if (!isAppError(err) || err.code !== 'VALIDATION_FAILED') throw err;
      for (const p of err.details as FieldProblem[]) {
        problems.push(part.prefix ? { field: p.field === '(body)' ? part.prefix.trim() : `${part.prefix}${p.field}`, problem: p.problem } : p);
      }
    }
  }
  if (problems.length) throw commonErrors.VALIDATION_FAILED(undefined, problems);
  return out as Parsed<P>;
}
