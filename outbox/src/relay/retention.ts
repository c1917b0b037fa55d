import type { Knex } from 'knex';
import { sleep } from '@strangler/platform';

export interface RetentionOptions {
  /** Published rows older than this are deleted. */
  keepMs: number;
  /** How often to look. */
  intervalMs: number;
  /** Only the leader deletes, so relays do not contend for the same rows. */
  isLeader(): boolean;
  onDeleted(count: number): void;
  onError(err: unknown): void;
}

/** Rows per DELETE: short statements keep locks and WAL bursts small on a busy outbox. */
const CHUNK = 5_000;

/**
 * Deletes published rows older than `keepMs` every `intervalMs`, in chunks, through the
 * partial index on `published_at`. Unpublished rows are never touched, however old.
 * Failures are reported and retried at the next interval.
 */
export function runRetention(pool: Knex, opts: RetentionOptions, signal: AbortSignal): Promise<void> {
  return (async () => {
    while (!signal.aborted) {
      await sleep(opts.intervalMs, signal);
      if (signal.aborted || !opts.isLeader()) continue;
      try {
        let total = 0;
        for (;;) {
          const res = await pool.raw(
            `delete from outbox where seq in (
               select seq from outbox where published_at is not null and published_at < now() - ? * interval '1 millisecond' limit ${CHUNK})`,
            [opts.keepMs],
          );
          total += res.rowCount ?? 0;
          if ((res.rowCount ?? 0) < CHUNK || signal.aborted) break;
        }
        if (total) opts.onDeleted(total);
      } catch (err) {
        opts.onError(err);
      }
    }
  })();
}
