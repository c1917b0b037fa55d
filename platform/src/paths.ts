import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, for finding `migrations/<db>` and other checked-in files. */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const migrationsDir = (owner: string) => path.join(repoRoot, 'migrations', owner);
