import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Knex } from 'knex';

/**
 * Runs knex migrations programmatically from a folder of `.ts` files. The knex CLI cannot load
 * ESM TypeScript migrations (knex#4793), so every database is migrated through this function.
 * Files run in name order; each exports `up(knex)` and `down(knex)`.
 */
export async function migrateLatest(knex: Knex, directory: string): Promise<string[]> {
  const [, applied] = (await knex.migrate.latest({ migrationSource: folderSource(directory), tableName: 'knex_migrations' })) as [number, string[]];
  return applied;
}

export async function migrateRollbackAll(knex: Knex, directory: string): Promise<void> {
  await knex.migrate.rollback({ migrationSource: folderSource(directory), tableName: 'knex_migrations' }, true);
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
