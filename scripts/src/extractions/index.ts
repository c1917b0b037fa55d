import type { SyncSpec } from '../sync/spec.ts';
import type { databases, DatabaseEntry } from '../databases.ts';
import { notification } from './notification.ts';

/**
 * What the migration scripts need to know about one extracted service: its database, and the
 * entities copied from the monolith (in dependency order). Extracting the next service means
 * adding one such file.
 */
export interface Extraction {
  service: string;
  database(dbs: ReturnType<typeof databases>): DatabaseEntry;
  specs: SyncSpec[];
  /**
   * Consumer names (queues `<name>.events`, `<name>.dead`) that keep the two sides in step, as
   * the processes name them from this environment.
   */
  consumers(env: Record<string, string | undefined>): Promise<string[]>;
  /**
   * Runs before the backfill takes its snapshot: declares and binds the service's consumer
   * queue, so every change committed after the snapshot waits in the queue (no gap). `npm start`
   * runs it too, before any relay publishes. Returns the queues it bound.
   */
  prepare?(env: Record<string, string | undefined>): Promise<string[]>;
}

export const extractions: Record<string, Extraction> = { notification };

export function extractionNamed(name: string | undefined): Extraction {
  const known = Object.keys(extractions).join(', ');
  if (!name) throw Object.assign(new Error(`Name the service: one of ${known}.`), { usage: true });
  const found = extractions[name];
  if (!found) throw Object.assign(new Error(`Unknown service "${name}": known services are ${known}.`), { usage: true });
  return found;
}
