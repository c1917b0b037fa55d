import { z } from 'zod';

/** Thrown once at start-up with every configuration problem, each saying what to set. */
export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  constructor(readonly problems: string[]) {
    super(`Invalid configuration (fix these and start again):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

/** Settings whose values are secrets: tokens, passwords, keys. */
const SECRET_NAME = /TOKEN|SECRET|PASSWORD|KEY/;

/** A rejected value as an error shows it: a secret by its length only, a URL without its password. */
function shownValue(key: string, value: string | undefined): string {
  if (value === undefined) return '""';
  if (SECRET_NAME.test(key)) return `<${value.length} characters, not shown>`;
  return JSON.stringify(value.replace(/(\/\/[^:/@]*:)[^@/]*@/, '$1***@'));
}

/**
 * Validates the environment variables named by `shape` once: applies defaults, reports every
 * problem in one ConfigError, and returns a frozen object. Empty strings count as unset.
 */
export function loadConfig<S extends z.ZodRawShape>(shape: S, env: Env = process.env): Readonly<z.infer<z.ZodObject<S>>> {
  const input: Env = {};
  for (const key of Object.keys(shape)) {
    const value = env[key];
    // Unset, empty or only blanks (`X= ` in a .env file) all mean the default: a number coerced
    // from " " is 0 (RELAY_RETENTION_HOURS=" " deleted every published row at the next sweep).
    if (value !== undefined && value.trim() !== '') input[key] = value;
  }
  const result = z.object(shape).strict().safeParse(input);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => {
        const key = issue.path.join('.');
        // Secrets stay out of the message, and so out of logs.
        return `${key}=${shownValue(key, input[key])}: ${issue.message}`;
      }),
    );
  }
  return Object.freeze(result.data) as Readonly<z.infer<z.ZodObject<S>>>;
}

/** The longest delay Node.js timers take: a longer one fires after 1 ms, so a poll or a retry given it would spin. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export const port = (fallback: number) => z.coerce.number().int().min(0).max(65535).default(fallback);

/** Connection settings shared by every process that talks to Postgres. */
export const pgEnv = {
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/, error: 'must be a postgres:// URL, e.g. postgres://postgres@127.0.0.1:5432/monolith' }).optional(),
  PGHOST: z.string().default('127.0.0.1'),
  PGPORT: port(5432),
  PGUSER: z.string().default('postgres'),
  PGPASSWORD: z.string().optional(),
};

export const amqpEnv = {
  AMQP_URL: z.url({ protocol: /^amqps?$/, error: 'must be an amqp:// URL, e.g. amqp://guest:guest@127.0.0.1:5672' }).default('amqp://guest:guest@127.0.0.1:5672'),
};

export type PgEnv = Readonly<z.infer<z.ZodObject<typeof pgEnv>>>;

/** Knex/pg connection settings for `database` on the configured server. */
export function pgConnection(env: PgEnv, database: string) {
  if (env.DATABASE_URL) {
    const url = new URL(env.DATABASE_URL);
    return {
      host: url.hostname,
      port: Number(url.port || 5432),
      user: decodeURIComponent(url.username || 'postgres'),
      password: url.password ? decodeURIComponent(url.password) : undefined,
      database,
    };
  }
  return { host: env.PGHOST, port: env.PGPORT, user: env.PGUSER, password: env.PGPASSWORD, database };
}
export type PgConnection = ReturnType<typeof pgConnection>;

/** The databases of the system, one per owner (DESIGN.md "Data ownership"); names overridable. */
export const databaseEnv = {
  MONOLITH_DB: z.string().regex(/^[a-z_][a-z0-9_]*$/).default('monolith'),
  USER_SVC_DB: z.string().regex(/^[a-z_][a-z0-9_]*$/).default('user_svc'),
  ORDER_SVC_DB: z.string().regex(/^[a-z_][a-z0-9_]*$/).default('order_svc'),
  PAYMENT_SVC_DB: z.string().regex(/^[a-z_][a-z0-9_]*$/).default('payment_svc'),
  NOTIFICATION_SVC_DB: z.string().regex(/^[a-z_][a-z0-9_]*$/).default('notification_svc'),
};
