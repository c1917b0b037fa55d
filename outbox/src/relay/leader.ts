import pg from 'pg';
import { backoffDelay, endPgClient, sleep, type PgConnection } from '@strangler/platform';

/**
 * Advisory-lock key of the relay lease: (0x5354524c "STRL", 1). Advisory locks are scoped to a
 * database, so each publishing database has its own leader.
 */
const LOCK = [0x5354524c, 1] as const;

export interface LeaseOptions {
  connection: PgConnection;
  applicationName: string;
  /** Written to `outbox_relay.leader` while this process leads (e.g. `host:pid:rand`). */
  instance: string;
  /** How often a follower tries to take the lease. */
  retryMs: number;
  /**
   * Longest a query on the lease session may wait for its answer before failing (which ends the
   * tenure). Default 35,000 ms: above the session's statement_timeout (30 s), so it only fires
   * when the connection went silent.
   */
  queryTimeoutMs?: number;
  onError(err: unknown): void;
}

/** A held lease: `session` is the connection that holds the lock; `signal` aborts when it is lost. */
export interface Tenure {
  session: pg.Client;
  signal: AbortSignal;
}

/**
 * The settings of the session that holds the lease, on which the leader claims and marks:
 * - Server-side keepalives so Postgres frees the lock of a partitioned holder (LeaderLease),
 *   and tcp_user_timeout for when the partition hits with data in flight (keepalives only
 *   run on an idle connection; retransmissions would go on for ~15 minutes); a statement
 *   that hangs for 30 s means the session is unusable.
 * - Marks commit without waiting for the WAL flush: a mark lost in a Postgres crash only
 *   republishes rows the consumers already have, and the relay's cycle gets shorter.
 * - Only plain index scans: the claim must walk the partial index in `seq` order, which
 *   marks the entries of rows published meanwhile as dead as it passes (kill_prior_tuple).
 *   A bitmap scan (the planner's pick on a table it has no statistics for) visits every
 *   dead entry again on every claim: measured here, claims grew from 0.9 to 5 ms within
 *   20 s at 500 events/s before vacuum caught up.
 * - Generic plans for the prepared claim and mark, whose plans do not depend on their
 *   parameters (and the two settings above keep them on those index scans). Postgres
 *   otherwise plans the claim again on every call, since a plan for known values always
 *   looks cheaper: measured here, 350 µs of backend CPU for a claim that finds nothing,
 *   110 µs with the generic plan. At 500 events/s the relay claims ~400 times a second.
 */
export const LEASE_SESSION_SETTINGS = `set tcp_keepalives_idle = 5; set tcp_keepalives_interval = 2; set tcp_keepalives_count = 3; set tcp_user_timeout = 15000;
  set statement_timeout = '30s'; set synchronous_commit = off; set enable_bitmapscan = off; set enable_seqscan = off; set plan_cache_mode = force_generic_plan`;

/**
 * The leader lease: a session-level Postgres advisory lock on a dedicated connection.
 *
 * Invariants: at most one relay per database holds the lock, and the holder claims and marks
 * rows on that same session (relay/claim.ts). So a relay whose session died (killed process,
 * pg_terminate_backend, network) can neither claim nor mark; the worst case is that it finishes
 * publishing a batch it had already claimed while the new leader claims it again: a duplicate
 * that consumers absorb, never a loss.
 *
 * Failure modes: Postgres frees the lock the moment the holder's socket closes (SIGKILL closes
 * it at once); a silently partitioned holder is cut off by TCP keepalives after about
 * 5 + 3 x 2 = 11 s, or by tcp_user_timeout 15 s after data it sent went unacknowledged.
 * Followers retry every `retryMs` (1 s by default), so a dead leader is replaced within ~1-2 s,
 * or ~13-17 s after a partition. The partitioned holder itself learns it within
 * `queryTimeoutMs` of its next query (35 s by default) and stops leading.
 */
export class LeaderLease {
  private session: pg.Client | null = null;
  private tenure: AbortController | null = null;
  private failures = 0;

  constructor(private readonly opts: LeaseOptions) {}

  get held(): boolean {
    return !!this.tenure && !this.tenure.signal.aborted;
  }

  /**
   * Waits until this process holds the lease; null if `signal` aborted first, and then the
   * session it opened is closed (it may have taken the lock while connecting or asking).
   */
  async acquire(signal: AbortSignal): Promise<Tenure | null> {
    while (!signal.aborted) {
      try {
        const session = this.session ?? (await this.connect());
        if (signal.aborted) break;
        const { rows } = await session.query<{ ok: boolean }>('select pg_try_advisory_lock($1, $2) as ok', [...LOCK]);
        this.failures = 0;
        if (signal.aborted) break;
        if (rows[0]?.ok) {
          const tenure = new AbortController();
          this.tenure = tenure;
          if (session !== this.session) tenure.abort();
          await session.query('update outbox_relay set leader = $1, leader_since = now() where id = 1', [this.opts.instance]);
          return { session, signal: tenure.signal };
        }
        await sleep(this.opts.retryMs, signal);
      } catch (err) {
        this.opts.onError(err);
        // Close the session, not just forget it: it may hold the lock already (the lock taken,
        // then the leader update failed: a missing table, a lock timeout), and an open session
        // would keep it from every relay until this process exits.
        const session = this.session;
        this.drop();
        if (session) void endPgClient(session);
        // Reconnect backoff: up to 200, 400, 800 ms ... capped at 5 s (full jitter).
        await sleep(50 + backoffDelay(this.failures++, { baseMs: 200, maxMs: 5_000 }), signal);
      }
    }
    // Given up (the relay stopping, whose own release() may have come before the connect
    // completed): no session of this call, and no lock, outlives it.
    await this.release();
    return null;
  }

  /** Gives the lease up (closing the session frees the lock). */
  async release(): Promise<void> {
    const session = this.session;
    this.drop();
    if (session) await endPgClient(session);
  }

  private drop() {
    this.tenure?.abort();
    this.tenure = null;
    this.session = null;
  }

  private async connect(): Promise<pg.Client> {
    const client = new pg.Client({
      ...this.opts.connection,
      application_name: this.opts.applicationName,
      keepAlive: true,
      keepAliveInitialDelayMillis: 5_000,
      connectionTimeoutMillis: 5_000,
      query_timeout: this.opts.queryTimeoutMs ?? 35_000,
    });
    const lost = (err?: unknown) => {
      if (this.session !== client) return;
      if (err) this.opts.onError(err);
      this.drop();
    };
    client.on('error', lost);
    client.on('end', () => lost());
    try {
      await client.connect();
      await client.query(LEASE_SESSION_SETTINGS);
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    serializeQueries(client);
    this.session = client;
    return client;
  }
}

/**
 * The leader claims on this session while earlier batches mark their confirms on it. pg queues
 * such overlapping queries itself but deprecates doing so (removed in pg 9): chain them here, in
 * the order they were issued, exactly as pg's own queue would run them.
 */
function serializeQueries(client: pg.Client): void {
  const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
  let tail: Promise<unknown> = Promise.resolve();
  (client as { query: unknown }).query = (...args: unknown[]) => {
    const run = tail.then(() => query(...args));
    tail = run.catch(() => {});
    return run;
  };
}
