/**
 * Making new store objects durable before their rows are committed: a row that survives a power
 * cut must never name files that did not. (A killed process needs none of this: the page cache
 * outlives it. Real Nix 2.8 does not sync store objects at all.)
 *
 * Two ways, chosen by how many file system objects a registration made. A few are fsynced one by
 * one, files and directories, then the store dir for the renames; beyond {@link FSYNC_LIMIT} the
 * whole file system is synced once with syncfs(2) (src/fs/sync-file-system.ts). Measured on
 * this shared VM with a throw-away script writing 9 KiB files: at load 3 an fsync cost ~0.35 ms
 * and a `sync -f` ~11 ms (crossover ~30 objects); at load 10-15 an fsync ~10 ms and a `sync -f`
 * 75-100 ms (crossover ~10). Fsyncing the 5,000 files of a 1,000-path import one by one took
 * 37 s there, against 0.1-0.8 s for one `sync -f`. Those syncs were spawned `sync -f`; the
 * addon's syncfs, without the fork, took 1-3.6 ms on a quiet machine where fsyncing 4 files took
 * 3-3.3 ms and 24 files 9-10 ms. The limit was left where it was: a syncfs also waits for every
 * other process's dirty data, which a busy machine has plenty of, and that was not re-measured.
 */
import { closeSync, constants as C, fsyncSync, lstatSync, openSync, readdirSync } from 'node:fs';

import { StrataError } from '../../core/error.js';
import { syncFileSystem } from '../../fs/sync-file-system.js';

/** Above this many objects, one syncfs of the file system beats an fsync of each (see above). */
export const FSYNC_LIMIT = 24;

/**
 * Objects a batch restores before write-back starts early. Below it the batch ends in one
 * syncfs: each early one is a journal commit, and for a 300-path substitution (~300 files) they
 * cost more than they saved (medians of 13 interleaved runs: 418 ms without, 425 ms with).
 */
const EARLY_MIN_NODES = 1024;

/**
 * Write-back started while a batch is still being restored: once the batch has restored
 * {@link EARLY_MIN_NODES} objects, one syncfs is kept in flight on the thread pool, so that the
 * kernel writes while the restore goes on and the final syncfs finds little left. Measured with a throw-away C
 * program writing 5,000 files (43 MiB, an import's shape) on this VM: 211-246 ms with one syncfs
 * at the end (106-126 ms of it the syncfs), 170-188 ms with syncfs looping alongside (the final
 * one 1-24 ms). A failed early syncfs is left to the final one to report.
 */
export class EarlyWriteback {
  #nodes = 0;
  #inFlight: Promise<void> | undefined;

  constructor(private readonly dir: string) {}

  /** Counts `nodes` more restored objects, and starts a syncfs when the batch is big and none runs. */
  restored(nodes: number): void {
    this.#nodes += nodes;
    if (this.#nodes < EARLY_MIN_NODES || this.#inFlight) return;
    this.#inFlight = syncFileSystem(this.dir)
      .catch(() => {})
      .finally(() => (this.#inFlight = undefined));
  }

  /** Waits for the syncfs in flight, if any. */
  async settled(): Promise<void> {
    await this.#inFlight;
  }
}

/**
 * Makes `objects` (complete trees in `dir`, `nodes` files and directories in all: a symlink needs
 * no fsync of its own) and their names in `dir` durable. `early` is the batch's write-back, if
 * it had one.
 */
export async function makeDurable(dir: string, objects: string[], nodes: number, early?: EarlyWriteback): Promise<void> {
  if (objects.length === 0) return;
  if (nodes + 1 <= FSYNC_LIMIT) {
    for (const o of objects) fsyncTree(o);
    fsyncPath(dir);
    return;
  }
  await early?.settled();
  try {
    await syncFileSystem(dir);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new StrataError('SYNC_FAILED', `Cannot make new store objects in '${dir}' durable: syncfs failed (${why})`, { value: dir });
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
