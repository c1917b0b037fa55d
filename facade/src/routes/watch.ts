import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';

/**
 * Calls `onChange` (debounced) when `file` changes. Watches the folder rather than the file:
 * editors and atomic writers replace the file by renaming a new one over it, which ends a watch
 * on the old inode. Returns a function that stops watching.
 */
export function watchFile(file: string, onChange: () => void, { debounceMs = 100, onError }: { debounceMs?: number; onError?: (err: Error) => void } = {}): () => void {
  const dir = path.dirname(path.resolve(file));
  const base = path.basename(file);
  let timer: NodeJS.Timeout | null = null;
  let watcher: FSWatcher | null = watch(dir, { persistent: false }, (_event, name) => {
    if (name !== null && name.toString() !== base) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      onChange();
    }, debounceMs);
  });
  watcher.on('error', (err) => onError?.(err));
  return () => {
    if (timer) clearTimeout(timer);
    watcher?.close();
    watcher = null;
  };
}
