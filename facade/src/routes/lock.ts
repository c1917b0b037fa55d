import { randomBytes } from 'node:crypto';
import { open, readFile, stat, unlink } from 'node:fs/promises';
import os from 'node:os';

/**
 * The route file's write lock: `<file>.lock`, created exclusively (O_EXCL) by whoever changes
 * the file (a `strangler flip --routes`, the facade writing an admin API change back) and held
 * for the read-modify-write-audit, milliseconds. The facade also takes it to load a changed file,
 * so it reads a writer's change only after that writer has audited it (and does not audit it a
 * second time under the file owner's name).
 *
 * Failure modes:
 * - A holder that crashed leaves the lock behind. A lock older than `staleMs` (10 s, a thousand
 *   times a normal hold) is taken to be stale and removed, after checking it is still the same
 *   file (inode and mtime), so a waiter is held up by a crashed writer for at most 10 s.
 * - A folder the process may not create files in (a read-only mount of the table): there is no
 *   lock to take and nothing in that folder can be written by this process anyway, so `fn` runs
 *   without it (a write then fails on its own, with its own error).
 * - Waiting longer than `waitMs`: `onTimeout: 'throw'` (writers) fails saying who holds the lock
 *   and how to clear it; `'proceed'` (loading the file) goes ahead unlocked, since refusing to
 *   load a valid file would be worse than a change audited twice.
 * Only writers that take the lock are serialised: an editor saving the file by hand is not.
 */
export interface LockOptions {
  /** How long to wait for the lock (default 15 s). */
  waitMs?: number;
  /** Age after which a lock is stale (default 10 s). */
  staleMs?: number;
  onTimeout?: 'throw' | 'proceed';
}

// No lock can be created: a folder this process may not write (nor then write the file in), or none at all (reading the file then fails on its own).
const UNLOCKABLE = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOENT']);

export const lockPath = (file: string) => `${file}.lock`;

export async function withRouteFileLock<T>(file: string, fn: () => Promise<T>, { waitMs = 15_000, staleMs = 10_000, onTimeout = 'throw' }: LockOptions = {}): Promise<T> {
  const lock = lockPath(file);
  const token = JSON.stringify({ pid: process.pid, host: os.hostname(), at: new Date().toISOString(), nonce: randomBytes(6).toString('hex') });
  const deadline = Date.now() + waitMs;
  let delay = 5;
  let held = false;
  for (;;) {
    try {
      const handle = await open(lock, 'wx', 0o644);
      try {
        await handle.writeFile(token, 'utf8');
      } finally {
        await handle.close();
      }
      held = true;
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (UNLOCKABLE.has(code)) break;
      if (code !== 'EEXIST') throw err;
    }
    if (await removeIfStale(lock, staleMs)) continue;
    if (Date.now() >= deadline) {
      if (onTimeout === 'proceed') break;
      const holder = await readFile(lock, 'utf8').catch(() => 'unknown');
      throw Object.assign(
        new Error(`The route file ${file} is locked by another writer (${holder}) for more than ${waitMs} ms. If no flip or facade is writing it, delete ${lock} and retry.`),
        { code: 'EROUTELOCKED' },
      );
    }
    // 5, 10, 20, 40, 50, 50 ... ms: holds last milliseconds, so the first retries come quickly.
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 50);
  }
  try {
    return await fn();
  } finally {
    if (held) await releaseLock(lock, token);
  }
}

async function removeIfStale(lock: string, staleMs: number): Promise<boolean> {
  try {
    const first = await stat(lock);
    if (Date.now() - first.mtimeMs < staleMs) return false;
    const again = await stat(lock);
    // Still the same stale file (not one a waiter created meanwhile): remove it.
    if (again.ino !== first.ino || again.mtimeMs !== first.mtimeMs) return false;
    await unlink(lock);
    return true;
  } catch (err) {
    // Gone meanwhile: try again at once.
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/** Removes the lock if it is still ours (a holder too slow may have had it removed as stale). */
async function releaseLock(lock: string, token: string): Promise<void> {
  try {
    if ((await readFile(lock, 'utf8')) === token) await unlink(lock);
  } catch {
    // already gone
  }
}
