import { lstatSync, readlinkSync, realpathSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';

/**
 * Calls `onChange` (debounced) when `file` changes. Watches the folder rather than the file:
 * editors and atomic writers replace the file by renaming a new one over it, which ends a watch
 * on the old inode. Returns a function that stops watching.
 *
 * A file reached through a symbolic link (a Kubernetes ConfigMap volume: `routes.yaml` ->
 * `..data/routes.yaml`, where an update swaps the `..data` link) changes without an event for
 * its own name: then events for the link's first step (`..data`) count too, and those for the
 * file the link resolves to in its own folder; the caller's reload finds out whether the
 * content changed.
 */
export function watchFile(file: string, onChange: () => void, { debounceMs = 100, onError }: { debounceMs?: number; onError?: (err: Error) => void } = {}): () => void {
  const resolved = path.resolve(file);
  const dir = path.dirname(resolved);
  const base = path.basename(file);
  // Names whose events count: the file's own, and for a symbolic link the first step of where it
  // points when that is in the same folder (`..data`), and the resolved file's name in its own
  // folder. Not every event in the folder: the lock and temporary files of a reload are events too.
  const names = new Set([base]);
  let target: { dir: string; name: string } | null = null;
  try {
    if (lstatSync(resolved).isSymbolicLink()) {
      const link = readlinkSync(resolved);
      const first = path.isAbsolute(link) ? null : link.split(path.sep)[0];
      if (first && first !== '.' && first !== '..') names.add(first);
      const real = realpathSync(resolved);
      target = { dir: path.dirname(real), name: path.basename(real) };
    }
  } catch {
    // not there yet: watched by name
  }
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
    if (name !== null && !names.has(name.toString())) return;
    changed();
  });
  main.on('error', (err) => onError?.(err));
  watchers.push(main);
  if (target && target.dir !== dir) {
    const { name: targetName } = target;
    try {
      // The folder of the link's target may go away when the link is swapped (ConfigMap): the
      // main folder's events still come.
      const other = watch(target.dir, { persistent: false }, (_event, name) => {
        if (name === null || name.toString() === targetName) changed();
      });
      other.on('error', () => other.close());
      watchers.push(other);
    } catch {
      // unreadable: the main folder's events still come
    }
  }
  return () => {
    if (timer) clearTimeout(timer);
    for (const w of watchers.splice(0)) w.close();
  };
}
