import type { Knex } from 'knex';

export type KeyClaim = { kind: 'new' } | { kind: 'replay'; status: number; body: unknown } | { kind: 'mismatch' };

/**
 * Claims an Idempotency-Key for this user inside the business transaction. If another request
 * with the same key is in flight, the insert waits for it on the primary key: when that one
 * commits, this one replays its response; when it rolls back (e.g. a provider timeout), this one
 * runs. A committed key always has its response (see `completeKey`), so replay never sees a
 * half-done request.
 */
export async function claimKey(trx: Knex.Transaction, userId: string, key: string, requestHash: string): Promise<KeyClaim> {
  const inserted = await trx('idempotency_keys')
    .insert({ user_id: userId, key, request_hash: requestHash, created_at: new Date() })
    .onConflict(['user_id', 'key'])
    .ignore()
    .returning('key');
  if (inserted.length) return { kind: 'new' };
  const row = await trx('idempotency_keys').where({ user_id: userId, key }).first();
  if (!row || row.request_hash !== requestHash || row.response_status === null) return { kind: 'mismatch' };
  return { kind: 'replay', status: row.response_status, body: row.response_body };
}

/** Stores the response to replay; call before the transaction commits. */
export async function completeKey(trx: Knex.Transaction, userId: string, key: string, status: number, body: unknown): Promise<void> {
  await trx('idempotency_keys')
    .where({ user_id: userId, key })
    .update({ response_status: status, response_body: JSON.stringify(body) });
}
