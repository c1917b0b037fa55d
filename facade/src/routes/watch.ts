import { realpathSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';

/**
 * Calls `onChange` (debounced) when `file` changes. Watches the folder rather than the file:
 * editors and atomic writers replace the file by renaming a new one over it, which ends a watch
 * on the old inode. Returns a function that stops watching.
 *
 * A file reached through a symbolic link (a Kubernetes ConfigMap volume: `routes.yaml` ->
 * `..data/routes.yaml`, where an update swaps the `..data` link) changes without an event for
 * its own name: then any event in its folder, or in the folder of the file the link resolves
 * to, counts, and the caller's reload finds out whether the content changed.
 */
export function watchFile(file: string, onChange: () => void, { debounceMs = 100, onError }: { debounceMs?: number; onError?: (err: Error) => void } = {}): () => void {
  const resolved = path.resolve(file);
  const dir = path.dirname(resolved);
  const base = path.basename(file);
  let real: string | null = null;
  try {
    real = realpathSync(resolved);
  } catch {
    // not there yet: watched by name
  }
  const linked = real !== null && real !== resolved;
  let timer: NodeJS.Timeout | null = null;
  const changed = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      onChange();
    }, debounceMs);
  };
  const watchers: FSWatcher[] = [];
  const main = watch(dir, { persistent: false }, (_event, name) => {
    if (!linked && name !== null && name.toString() !== base) return;
    changed();
  });
  main.on('error', (err) => onError?.(err));
  watchers.push(main);
  if (linked && path.dirname(real!) !== dir) {
    try {
      // The folder of the link's target may go away when the link is swapped (ConfigMap): the
      // main folder's events still come.
      const target = watch(path.dirname(real!), { persistent: false }, changed);
      target.on('error', () => target.close());
      watchers.push(target);
    } catch {
      // unreadable: the main folder's events still come
    }
  }
  return () => {
    if (timer) clearTimeout(timer);
    for (const w of watchers.splice(0)) w.close();
  };
}
