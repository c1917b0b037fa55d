import type { Knex } from 'knex';
import { settlesWithin } from '@strangler/platform';

/** The parts of a node-postgres client (a connection of knex's pool) used here. */
export interface PgClient {
  /** A simple query: no parameters, any number of statements, one round trip. */
  query(text: string): Promise<unknown>;
  escapeLiteral(value: string): string;
  connection?: { stream?: { destroy(): void } };
  /** node-postgres emits 'end' once its socket closed; knex's pool then counts the client as disposed. */
  once(event: 'end', listener: () => void): unknown;
}

interface KnexTransactionInternals extends PromiseLike<unknown> {
  begin(connection: unknown): Promise<unknown>;
  isCompleted(): boolean;
}

interface KnexClientInternals {
  dialect: string;
  transaction(container: (trx: Knex.Transaction) => Promise<unknown>, config: object): KnexTransactionInternals;
  acquireConnection(): Promise<PgClient>;
  releaseConnection(connection: PgClient): Promise<unknown>;
}

/** A knex transaction object bound to one pooled connection for good, and whether a transaction of ours is open on it. */
interface Bound {
  trx: Knex.Transaction;
  state: { open: boolean };
}

const bound = new WeakMap<PgClient, Bound>();

/**
 * Runs `work` in a transaction on a connection of `db`'s pool, like `db.transaction(work)`, at a
 * fraction of the cost, for the consumer's batches (EventHandler says what a handler may do with
 * the transaction object):
 *
 * - no BEGIN of its own: `work`'s first statement, sent on the connection it is given as a
 *   simple query, must begin the transaction itself (one round trip less);
 * - the knex transaction object handed to `work` is made once per pooled connection and reused:
 *   knex builds a whole knex instance (hundreds of closures and properties) for every
 *   transaction, and at hundreds of transactions a second that garbage, promoted to the old
 *   generation, made most of the consumer's GC pauses, themselves most of the end-to-end p99
 *   (bench/outbox.ts). Between our transactions it refuses queries, as a finished knex
 *   transaction does; `commit()` and `rollback()` on it are refused too (this function ends
 *   the transaction: resolve to commit, throw to roll back). Savepoints (`trx.transaction()`)
 *   work as usual.
 *
 * COMMIT when `work` resolves, ROLLBACK when it throws (a ROLLBACK after a first statement that
 * failed before its BEGIN only draws a warning from Postgres); the connection goes back to the
 * pool either way (one whose socket died is discarded by knex's pool).
 *
 * Relies on knex internals (knex 3.x): `client.transaction()` returns its Transaction at once and
 * only calls its `begin()` a turn later, takes the connection to use as an option, and checks
 * `isCompleted()` before each query. A knex that changed them fails outbox/test/apply-batch.test.ts.
 */
export async function consumerTransaction<T>(db: Knex, work: (trx: Knex.Transaction, connection: PgClient) => Promise<T>, { timeoutMs, signal }: TransactionLimits = {}): Promise<T> {
  const client = db.client as unknown as KnexClientInternals;
  if (client.dialect !== 'postgresql') throw new Error(`consume: the consumer's database must be PostgreSQL (knex client "${client.dialect}").`);
  signal?.throwIfAborted();
  const connection = await client.acquireConnection();
  let b: Bound | undefined;
  // Past the deadline, or once `signal` aborts, the transaction ends without waiting for `work`:
  // its connection is dropped (Postgres rolls back) and goes back to the pool, which discards it.
  let ended: TransactionEnded | null = null;
  let timer: NodeJS.Timeout | undefined;
  let endNow: (reason: TransactionEnded) => void = () => {};
  let gone: Promise<void> = Promise.resolve();
  const cut = new Promise<never>((_, reject) => {
    endNow = (reason) => {
      if (ended) return;
      ended = reason;
      if (b) b.state.open = false; // a handler still running has its later queries refused
      gone = new Promise((resolve) => connection.once('end', resolve));
      connection.connection?.stream?.destroy();
      reject(reason);
    };
  });
  cut.catch(() => {});
  const onAbort = () => endNow(new TransactionEnded('aborted', `the transaction was abandoned: ${String(signal?.reason ?? 'aborted')}`));
  if (timeoutMs !== undefined) timer = setTimeout(() => endNow(new TransactionEnded('ETIMEDOUT', `transaction took longer than ${timeoutMs} ms: its connection was dropped`)), timeoutMs);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    b = await boundTo(client, connection);
    b.state.open = !ended;
    const running = work(b.trx, connection);
    running.catch(() => {}); // settles after the race when the transaction was cut short
    const result = await Promise.race([running, cut]);
    // Closed before COMMIT goes out, as knex does: a handler query still on its way (not
    // awaited, or left behind by a rejection) is refused instead of queued behind the COMMIT,
    // where it would run on its own, outside the transaction.
    b.state.open = false;
    const { command } = (await Promise.race([connection.query('commit'), cut])) as { command?: string };
    // Postgres answers the COMMIT of a transaction in which a statement failed with ROLLBACK,
    // and no error: a handler caught that error and went on.
    if (command !== 'COMMIT') throw new Error(`the transaction was rolled back at COMMIT (${command}): a statement in it failed, and the handler caught the error and went on`);
    return result;
  } catch (err) {
    if (b) b.state.open = false;
    if (ended) throw Object.assign(ended, { cause: err === ended ? undefined : err });
    await connection.query('rollback').catch(() => {});
    throw err;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
    // A connection cut short goes back once its client has ended: released before, the pool
    // would hand the dead connection to the next caller (the consumer's database probe among them).
    if (ended) await settlesWithin(gone, 2_000);
    await client.releaseConnection(connection);
  }
}

export interface TransactionLimits {
  /**
   * Longest the transaction may take, `work` and COMMIT included. A connection that went silent
   * (a network partition, a dead load balancer) never answers, and a handler can wait on
   * something else that never settles (an HTTP call without a timeout): either would hold the
   * connection, and whatever waits for the transaction, for good.
   */
  timeoutMs?: number;
  /** Ends the transaction at once when aborted (a consumer that stops and will not wait longer). */
  signal?: AbortSignal;
}

/** Why consumerTransaction ended a transaction without waiting for its work; `code` ETIMEDOUT reads as a lost connection (consume.ts). */
export class TransactionEnded extends Error {
  constructor(
    readonly code: 'ETIMEDOUT' | 'aborted',
    message: string,
  ) {
    super(message);
    this.name = 'TransactionEnded';
  }
}

/**
 * The knex transaction object of `connection`: a knex transaction that sends no BEGIN, whose
 * body never settles (so knex never commits, rolls back or lets go of the connection), and that
 * counts as completed while no transaction of ours is open.
 */
function boundTo(client: KnexClientInternals, connection: PgClient): Promise<Bound> {
  const existing = bound.get(connection);
  if (existing) return Promise.resolve(existing);
  return new Promise<Bound>((resolve, reject) => {
    const state = { open: false };
    const transaction = client.transaction(
      (trx) => {
        // Thrown, not a rejected promise: called without await, a rejection would go unhandled.
        const refuse = (what: string) => () => {
          throw new Error(`consume: a handler must not ${what} the batch's transaction; the consumer commits it when the handler resolves, and rolls it back when it throws.`);
        };
        Object.assign(trx, { commit: refuse('commit'), rollback: refuse('roll back') });
        const b: Bound = { trx, state };
        bound.set(connection, b);
        resolve(b);
        return new Promise(() => {});
      },
      { connection, userParams: {}, doNotRejectOnRollback: true },
    );
    transaction.begin = () => Promise.resolve();
    transaction.isCompleted = () => !state.open;
    // Its body never settles, so neither should it: if it does (knex failed before calling the
    // body, or works differently), say so rather than wait for good.
    transaction.then(
      () => reject(new Error('consume: knex ended the transaction of a pooled connection unexpectedly (a knex version this consumer does not know?)')),
      reject,
    );
  });
}
