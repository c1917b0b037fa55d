import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Knex } from 'knex';
import pg from 'pg';

/**
 * Runs knex migrations programmatically from a folder of `.ts` files. The knex CLI cannot load
 * ESM TypeScript migrations (knex#4793), so every database is migrated through this function.
 * Files run in name order; each exports `up(knex)` and `down(knex)`.
 */
export async function migrateLatest(knex: Knex, directory: string): Promise<string[]> {
  return withMigrationLock(knex, directory, async (config) => {
    const [, applied] = (await knex.migrate.latest(config)) as [number, string[]];
    return applied;
  });
}

export async function migrateRollbackAll(knex: Knex, directory: string): Promise<void> {
  await withMigrationLock(knex, directory, (config) => knex.migrate.rollback(config, true));
}

/** Advisory-lock key serialising migrators of one database: (0x5354524c "STRL", 2). */
const MIGRATE_LOCK = [0x5354524c, 2] as const;

/**
 * Runs `fn` holding a session advisory lock on a connection of its own, which Postgres frees
 * the moment that session ends, however the process ends. Under it, knex's own lock row is
 * freed first: knex commits that row on its own when a migration runs outside a transaction
 * (`config.transaction = false`), so a migrator killed during such a migration would otherwise
 * leave every later run refused ("Migration table is already locked").
 */
async function withMigrationLock<T>(knex: Knex, directory: string, fn: (config: Knex.MigratorConfig) => Promise<T>): Promise<T> {
  const config: Knex.MigratorConfig = { migrationSource: folderSource(directory), tableName: 'knex_migrations' };
  const session = new pg.Client({ ...(knex.client.config.connection as pg.ClientConfig), application_name: 'strangler-migrate-lock' });
  await session.connect();
  try {
    await session.query('select pg_advisory_lock($1, $2)', [...MIGRATE_LOCK]);
    await knex.migrate.forceFreeMigrationsLock(config);
    return await fn(config);
  } finally {
    await session.end().catch(() => {});
  }
}

function folderSource(directory: string): Knex.MigrationSource<string> {
  return {
    async getMigrations() {
      const files = await readdir(directory);
      return files.filter((f) => /^\d+.*\.ts$/.test(f) && !f.endsWith('.d.ts')).sort();
    },
    getMigrationName: (file) => file,
    getMigration: (file) => import(pathToFileURL(path.join(directory, file)).href) as Promise<Knex.Migration>,
  };
}
