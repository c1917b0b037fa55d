import { existsSync } from 'node:fs';
import { createDb, createLogger, ensureDatabase, migrateLatest } from '@strangler/platform';
import { databases, type DatabaseEntry } from './databases.ts';

const log = createLogger('migrate');

/** Creates each database if missing and brings it to the latest migration. */
export async function migrateAll(entries: DatabaseEntry[] = Object.values(databases())): Promise<void> {
  for (const db of entries) {
    if (!existsSync(db.migrations)) continue;
    if (await ensureDatabase(db.connection, db.name)) log.info({ database: db.name }, 'created database');
    const knex = createDb(db.connection, { applicationName: 'strangler-migrate', pool: { max: 1 } });
    try {
      const applied = await migrateLatest(knex, db.migrations);
      log.info({ database: db.name, applied }, applied.length ? 'migrated' : 'up to date');
    } finally {
      await knex.destroy();
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  migrateAll().catch((err) => {
    log.error({ err }, 'migration failed');
    process.exit(1);
  });
}
