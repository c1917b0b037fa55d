import { databaseEnv, loadConfig, pgConnection, pgEnv, migrationsDir, type PgConnection } from '@strangler/platform';

/**
 * The databases of the system, one per owner (DESIGN.md "Data ownership"), with the folder of
 * migrations each is built from. Names come from the environment (MONOLITH_DB, ...).
 */
export function databases(env: Record<string, string | undefined> = process.env) {
  const cfg = loadConfig({ ...pgEnv, ...databaseEnv }, env);
  const entry = (owner: string, name: string) => ({ owner, name, migrations: migrationsDir(owner), connection: pgConnection(cfg, name) as PgConnection });
  return {
    monolith: entry('monolith', cfg.MONOLITH_DB),
    notification: entry('notification', cfg.NOTIFICATION_SVC_DB),
  } as const;
}

export type DatabaseEntry = ReturnType<typeof databases>[keyof ReturnType<typeof databases>];
