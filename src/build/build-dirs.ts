/**
 * The build dirs of one `realise` run: one private temp dir holding each build's
 * `nix-build-<drv name>-<n>` (n the smallest number free, as Nix numbers its build dirs) and its
 * raw log beside it.
 *
 * Why reuse: an empty build dir left by a finished build is renamed for the next build instead
 * of being removed and a new one made. On this VM's ext4 (mounted with `discard`) an rmdir
 * blocks the calling thread for 4-8 ms (100 rmdirs: 364 ms of wall time for 28 ms of CPU), on
 * the main thread, between two builds; a rename takes ~0.3 ms. A dir goes back to the pool only
 * when it is exactly as a build found it: an empty, real directory, mode 0700.
 */
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { removeTree } from '../fs/remove-tree.js';

export class BuildDirs {
  private root: string | undefined;
  /** Names of the dirs builds hold now (the root is a fresh temp dir: nobody else makes any). */
  private readonly running = new Set<string>();
  /** Empty dirs of finished builds, by name, ready to be renamed for the next. */
  private readonly free = new Map<string, string>();
  private leftovers = 0;

  /** An empty dir, mode 0700, named `nix-build-<drvName>-<n>` with n the smallest free. */
  acquire(drvName: string): string {
    this.root ??= mkdtempSync(join(tmpdir(), 'strata-build-'));
    let name: string;
    for (let n = 0; ; n++) {
      name = `nix-build-${drvName}-${n}`;
      if (!this.running.has(name)) break;
    }
    const dir = join(this.root, name);
    if (this.free.has(name)) this.free.delete(name);
    else {
      const spare = this.free.keys().next();
      if (spare.done) mkdirSync(dir, { mode: 0o700 });
      else {
        renameSync(this.free.get(spare.value)!, dir);
        this.free.delete(spare.value);
      }
    }
    this.running.add(name);
    return dir;
  }

  /**
   * Takes back a build's dir. Kept for reuse when it is as it was handed out (the caller has
   * removed what strata itself put there): returns undefined. Otherwise it is moved aside, out of
   * the way of later builds' names, and the caller removes what this returns.
   */
  release(dir: string): string | undefined {
    const name = dir.slice(dir.lastIndexOf('/') + 1);
    try {
      const st = lstatSync(dir);
      if (st.isDirectory() && (st.mode & 0o7777) === 0o700 && readdirSync(dir).length === 0) {
        this.free.set(name, dir);
        this.running.delete(name);
        return undefined;
      }
    } catch {
      // Gone or unreadable: not reusable.
    }
    const aside = join(this.root!, `.leftover-${this.leftovers++}`);
    try {
      renameSync(dir, aside);
    } catch {
      return dir; // Its name stays taken for the rest of the run.
    }
    this.running.delete(name);
    return aside;
  }

  /** Removes the root and all in it (at the end of the run). */
  close(): void {
    if (this.root !== undefined) removeTree(this.root);
    this.root = undefined;
    this.free.clear();
    this.running.clear();
  }
}
