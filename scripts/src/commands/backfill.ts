import cliProgress from 'cli-progress';
import { createDb } from '@strangler/platform';
import { UsageError, type Command } from '../cli.ts';
import { databases } from '../databases.ts';
import { extractionNamed } from '../extractions/index.ts';
import { backfill } from '../sync/backfill.ts';

export const command: Command = {
  summary: "copy the monolith's existing data into a service's database (an interrupted run resumes; --restart starts over)",
  usage: 'npm run strangler -- backfill <service> [--batch-size N] [--restart]',
  options: { 'batch-size': { type: 'string' }, restart: { type: 'boolean' } },
  async run({ positionals, values }) {
    let extraction;
    try {
      extraction = extractionNamed(positionals[0]);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const batchSize = values['batch-size'] === undefined ? 1_000 : Number(values['batch-size']);
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 50_000) throw new UsageError('--batch-size takes a whole number from 1 to 50000.');
    const dbs = databases();
    const source = createDb(dbs.monolith.connection, { applicationName: 'strangler-backfill', pool: { max: 2 } });
    const target = createDb(extraction.database(dbs).connection, { applicationName: 'strangler-backfill', pool: { max: 2 } });
    const abort = new AbortController();
    const onSignal = () => {
      console.error('\nInterrupted: stopping after the current batch; run the same command again to resume.');
      abort.abort();
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      await extraction.prepare?.(process.env);
      for (const spec of extraction.specs) {
        const bar = new cliProgress.SingleBar({ format: `${spec.name.padEnd(14)} {bar} {percentage}% {value}/{total} rows {duration}s`, stream: process.stderr }, cliProgress.Presets.shades_classic);
        let started = false;
        const result = await backfill(source, target, spec, {
          batchSize,
          restart: Boolean(values.restart),
          signal: abort.signal,
          onProgress: (done, total) => {
            if (!started) bar.start(total, 0);
            started = true;
            bar.update(done);
          },
        });
        if (started) bar.stop();
        if (abort.signal.aborted) return 1;
        console.log(
          `${spec.name}: ${result.copied} copied, ${result.skippedNewer} already up to date in the service` +
            (result.resumedAfter ? ` (resumed after ${result.resumedAfter}, where an interrupted run stopped; --restart copies from the start)` : ''),
        );
      }
      return 0;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await Promise.all([source.destroy(), target.destroy()]);
    }
  },
};
