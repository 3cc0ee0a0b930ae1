/**
 * Making new store objects durable before their rows are committed: a row that survives a power
 * cut must never name files that did not. (A killed process needs none of this: the page cache
 * outlives it. Real Nix 2.8 does not sync store objects at all.)
 *
 * Two ways, chosen by how many file system objects a registration made. A few are fsynced one by
 * one, files and directories, then the store dir for the renames; beyond {@link FSYNC_LIMIT} the
 * whole file system is synced once with syncfs(2) (`sync -f`, as Node has no syncfs). Measured on
 * this shared VM with a throw-away script writing 9 KiB files: at load 3 an fsync cost ~0.35 ms
 * and a `sync -f` ~11 ms (crossover ~30 objects); at load 10-15 an fsync ~10 ms and a `sync -f`
 * 75-100 ms (crossover ~10). Fsyncing the 5,000 files of a 1,000-path import one by one took
 * 37 s there, against 0.1-0.8 s for one `sync -f`.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, constants as C, fsyncSync, lstatSync, openSync, readdirSync } from 'node:fs';

import { StrataError } from '../../core/error.js';

/** Above this many objects, one syncfs of the file system beats an fsync of each (see above). */
export const FSYNC_LIMIT = 24;

/**
 * Makes `objects` (complete trees in `dir`, `nodes` files and directories in all: a symlink needs
 * no fsync of its own) and their names in `dir` durable.
 */
export function makeDurable(dir: string, objects: string[], nodes: number): void {
  if (objects.length === 0) return;
  if (nodes + 1 <= FSYNC_LIMIT) {
    for (const o of objects) fsyncTree(o);
    fsyncPath(dir);
    return;
  }
  const r = spawnSync('sync', ['-f', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : `exit ${r.status}: ${String(r.stderr).trim()}`;
    throw new StrataError('SYNC_FAILED', `Cannot make new store objects in '${dir}' durable: sync -f failed (${why})`, { value: dir });
  }
}

function fsyncPath(path: string | Buffer): void {
  const fd = openSync(path, C.O_RDONLY | C.O_NOFOLLOW);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** fsyncs every regular file and directory under `path` (a symlink is durable with its dir's entry). */
function fsyncTree(path: string | Buffer): void {
  const st = lstatSync(path);
  if (st.isSymbolicLink()) return;
  // Names as bytes: a store object's names need not be UTF-8.
  if (st.isDirectory()) for (const name of readdirSync(path, { encoding: 'buffer' })) fsyncTree(Buffer.concat([Buffer.from(path), SLASH, name]));
  fsyncPath(path);
}

const SLASH = Buffer.from('/');
