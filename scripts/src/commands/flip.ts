import { ControlUsageError, flipPatch, flipRoute } from '@strangler/facade';
import { UsageError, type Command } from '../cli.ts';

export const command: Command = {
  summary: 'flip a route: who serves it, shadow it, or canary it (through the admin API, or in the route file)',
  usage: [
    'npm run strangler -- flip <routeId> (--serve <upstream> | --shadow <upstream> [--percent N] [--ignore <json paths>] | --canary <upstream> --percent N [--sticky-by user|header:<name>|cookie:<name>] | --off-shadow | --off-canary) --why "<reason>" [--who <name>] [--routes <file>]',
    '  --ignore \'$.id,$.createdAt\' leaves those JSON paths out of the shadow comparison (repeatable or comma-separated):',
    '  needed for values the primary generates on a write, which it cannot be asked twice for to learn as noise.',
    '  Talks to the admin API at STRANGLER_ADMIN_URL (default http://127.0.0.1:8081) with STRANGLER_ADMIN_TOKEN;',
    '  with --routes <file> it still goes through the admin API when that facade serves the same file, and otherwise edits',
    '  the file under its write lock (<file>.lock, shared with the facade; a running facade reloads it). Every flip is audited.',
  ].join('\n'),
  options: {
    serve: { type: 'string' },
    shadow: { type: 'string' },
    canary: { type: 'string' },
    percent: { type: 'string' },
    ignore: { type: 'string', multiple: true },
    'sticky-by': { type: 'string' },
    'off-shadow': { type: 'boolean' },
    'off-canary': { type: 'boolean' },
    why: { type: 'string' },
    who: { type: 'string' },
    routes: { type: 'string' },
  },
  async run({ positionals, values }) {
    const [routeId, ...extra] = positionals;
    if (!routeId || extra.length) throw new UsageError('Give exactly one route id (list them with: npm run strangler -- routes).');
    try {
      const patch = flipPatch({
        serve: values.serve as string | undefined,
        shadow: values.shadow as string | undefined,
        canary: values.canary as string | undefined,
        percent: values.percent as string | undefined,
        stickyBy: values['sticky-by'] as string | undefined,
        offShadow: values['off-shadow'] as boolean | undefined,
        offCanary: values['off-canary'] as boolean | undefined,
        ignore: values.ignore as string[] | undefined,
      });
      const result = await flipRoute({
        routeId,
        patch,
        why: (values.why as string | undefined) ?? '',
        who: values.who as string | undefined,
        routesFile: values.routes as string | undefined,
        adminUrl: process.env.STRANGLER_ADMIN_URL || 'http://127.0.0.1:8081',
        adminToken: process.env.STRANGLER_ADMIN_TOKEN,
      });
      const notes = typeof values.serve === 'string' ? stillElsewhere(result.after, values.serve) : [];
      if (!result.changed) {
        console.log(`${routeId} unchanged: it already is as asked (nothing written or audited)`);
        console.log(`  route: ${JSON.stringify(result.after)}`);
        for (const note of notes) console.log(`  note: ${note}`);
        return 0;
      }
      console.log(`${routeId} changed (${result.via === 'admin' ? 'through the admin API' : 'in the route file'})`);
      for (const note of result.implied) console.log(`  ${note}`);
      console.log(`  before: ${JSON.stringify(result.before)}`);
      console.log(`  after:  ${JSON.stringify(result.after)}`);
      for (const note of notes) console.log(`  note: ${note}`);
      if (!result.audited) {
        console.error(
          `warning: the change is in effect but its audit entry could not be written${result.auditError ? ` (${result.auditError})` : ''}; a running facade audits it as a file edit when it reloads.`,
        );
      }
      return 0;
    } catch (err) {
      if (err instanceof ControlUsageError) throw new UsageError(err.message);
      throw err;
    }
  },
};

/**
 * What still sends the route's traffic somewhere other than `serve` after a `--serve` flip: the
 * usual surprise is a rollback (`--serve monolith`) during a canary, which leaves the canary on.
 */
function stillElsewhere(route: unknown, serve: string): string[] {
  const r = (route ?? {}) as { canary?: { to?: string; percent?: number }; shadow?: { to?: string; percent?: number } };
  const notes: string[] = [];
  if (r.canary?.to && r.canary.to !== serve) notes.push(`its canary still sends ${r.canary.percent ?? '?'}% of requests to ${r.canary.to}; add --off-canary to end it`);
  if (r.shadow?.to && r.shadow.to !== serve) notes.push(`its shadow still mirrors ${r.shadow.percent ?? 100}% of requests to ${r.shadow.to}; add --off-shadow to end it`);
  return notes;
}
