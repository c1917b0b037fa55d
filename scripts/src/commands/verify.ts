import { createDb } from '@strangler/platform';
import { UsageError, type Command } from '../cli.ts';
import { databases } from '../databases.ts';
import { extractionNamed } from '../extractions/index.ts';
import { verify, type VerifyReport } from '../sync/verify.ts';

export const command: Command = {
  summary: "compare the monolith's and a service's data; exits 1 on any difference",
  usage: 'npm run strangler -- verify <service> [--examples N] [--json]',
  options: { examples: { type: 'string' }, json: { type: 'boolean' } },
  async run({ positionals, values }) {
    let extraction;
    try {
      extraction = extractionNamed(positionals[0]);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const maxExamples = values.examples === undefined ? 10 : Number(values.examples);
    if (!Number.isInteger(maxExamples) || maxExamples < 0) throw new UsageError('--examples takes a whole number (0 or more).');
    const dbs = databases();
    const source = createDb(dbs.monolith.connection, { applicationName: 'strangler-verify', pool: { max: 2 } });
    const target = createDb(extraction.database(dbs).connection, { applicationName: 'strangler-verify', pool: { max: 2 } });
    try {
      const reports: VerifyReport[] = [];
      for (const spec of extraction.specs) reports.push(await verify(source, target, spec, { maxExamples }));
      const total = reports.reduce((n, r) => n + r.differences, 0);
      if (values.json) console.log(JSON.stringify({ service: extraction.service, differences: total, reports }));
      else {
        for (const r of reports) {
          console.log(`${r.spec.padEnd(14)} monolith ${r.sourceRows} rows, ${extraction.service} ${r.targetRows} rows, ${r.differences} difference(s)`);
          for (const d of r.examples) console.log(`  ${d.kind.padEnd(8)} ${d.key}${d.kind === 'changed' ? ` ${JSON.stringify(d.fields)}` : ''}`);
          if (r.differences > r.examples.length) console.log(`  ... and ${r.differences - r.examples.length} more`);
        }
        console.log(total ? `${total} difference(s) found.` : 'No differences.');
        if (total) {
          console.log(
            `Rows missing in ${extraction.service}, or at an older version there, are copied by "npm run strangler -- backfill ${extraction.service}". ` +
              'A row that differs at the same version, or one only the service has, was written on one side without an event (by hand, or past the outbox): ' +
              "find that writer; backfill never overwrites a version the service already has.",
          );
        }
      }
      return total ? 1 : 0;
    } finally {
      await Promise.all([source.destroy(), target.destroy()]);
    }
  },
};
