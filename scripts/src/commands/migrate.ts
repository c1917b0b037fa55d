import type { Command } from '../cli.ts';
import { databases } from '../databases.ts';
import { migrateAll } from '../migrate.ts';
import { UsageError } from '../cli.ts';

export const command: Command = {
  summary: 'create the databases if missing and run their migrations',
  usage: 'npm run strangler -- migrate [owner ...]   (owners: monolith, notification; default all)',
  async run({ positionals }) {
    const all = databases();
    const unknown = positionals.filter((p) => !(p in all));
    if (unknown.length) throw new UsageError(`Unknown database owner(s): ${unknown.join(', ')}. Known: ${Object.keys(all).join(', ')}.`);
    await migrateAll(positionals.length ? positionals.map((p) => all[p as keyof typeof all]) : undefined);
    return 0;
  },
};
