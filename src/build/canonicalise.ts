/**
 * Giving a freshly built output the metadata of a store object (formats.md §1): files 0444 or
 * 0555 (owner-executable), directories 0555, mtime 1, owner root, no setuid/setgid, no hard link
 * shared with a file outside the output. Only regular files, directories and symlinks may exist.
 */
import {
  chmodSync,
  copyFileSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  readdirSync,
  renameSync,
  type Stats,
} from 'node:fs';
import { join } from 'node:path';

import { StrataError } from '../core/error.js';

/** mtime 1, not 0: some tools take 0 for "unknown" (the same choice as Nix). */
const STORE_MTIME = 1;

interface Node {
  path: string;
  st: Stats;
}

function kindOf(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'of an unknown type';
}

/**
 * Canonicalises the tree at `root` in place. `display` is how errors name it (the store path).
 *
 * @example canonicaliseOutput('/nix/var/nix/builds/x/upper/94f9…-simple', '/nix/store/94f9…-simple')
 */
export function canonicaliseOutput(root: string, display: string): void {
  const nodes: Node[] = [];
  const walk = (path: string): void => {
    const st = lstatSync(path);
    if (!st.isFile() && !st.isDirectory() && !st.isSymbolicLink()) {
      const rel = path === root ? display : `${display}${path.slice(root.length)}`;
      throw new StrataError(
        'OUTPUT_INVALID',
        `Cannot register '${display}': '${rel}' is ${kindOf(st)}, not a regular file, directory or symlink`,
        { value: rel },
      );
    }
    if (st.isDirectory()) for (const e of readdirSync(path)) walk(join(path, e));
    nodes.push({ path, st }); // Children before their directory: directories are made read-only last.
  };
  walk(root);

  // A file linked from outside the output (nlink larger than its links seen inside) is copied,
  // so changing the outside file can never change the store object.
  const linksInside = new Map<string, number>();
  for (const { st } of nodes)
    if (st.isFile() && st.nlink > 1)
      linksInside.set(`${st.dev}:${st.ino}`, (linksInside.get(`${st.dev}:${st.ino}`) ?? 0) + 1);
  for (const n of nodes) {
    if (
      !n.st.isFile() ||
      n.st.nlink <= 1 ||
      linksInside.get(`${n.st.dev}:${n.st.ino}`)! >= n.st.nlink
    )
      continue;
    const tmp = `${n.path}.strata-unlink`;
    copyFileSync(n.path, tmp);
    renameSync(tmp, n.path);
    n.st = lstatSync(n.path);
  }

  const root0 = process.getuid?.() === 0;
  for (const { path, st } of nodes) {
    if (root0 && (st.uid !== 0 || st.gid !== 0)) lchownSync(path, 0, 0);
    if (!st.isSymbolicLink()) {
      // Clears setuid, setgid and sticky, and every write bit.
      const mode = st.isDirectory() || (st.mode & 0o100) !== 0 ? 0o555 : 0o444;
      if ((st.mode & 0o7777) !== mode) chmodSync(path, mode);
    }
    lutimesSync(path, STORE_MTIME, STORE_MTIME);
  }
}
