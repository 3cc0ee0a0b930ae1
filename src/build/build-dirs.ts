/**
 * The build dirs of one `realise` run. Each build gets `$TMPDIR/nix-build-<drv name>-<n>`, n the
 * smallest number free, made as Nix 2.8 makes it (mkdir 0700, the next number on EEXIST), so a
 * builder that records its build dir (a compiler's debug info, a script's `pwd`) writes the same
 * bytes under strata as under real Nix. Raw logs and finished dirs live in one private temp dir
 * of the run.
 *
 * Why a finished build's dir is renamed into the private dir rather than removed on the spot: on
 * this VM's ext4 (mounted with `discard`) an rmdir blocks the calling thread for 4-8 ms (100
 * rmdirs: 364 ms of wall time for 28 ms of CPU), where a rename takes ~0.3 ms; the caller removes
 * what {@link BuildDirs.release} returns off the main thread, and the name is free at once.
 */
import { mkdirSync, mkdtempSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

import { removeTree } from '../fs/remove-tree.js';

export class BuildDirs {
  private root: string | undefined;
  private finished = 0;

  /** A new empty dir, mode 0700: `$TMPDIR/nix-build-<drvName>-<n>` with n the smallest free. */
  acquire(drvName: string): string {
    const parent = tmpdir();
    for (let n = 0; ; n++) {
      const dir = join(parent, `nix-build-${drvName}-${n}`);
      try {
        mkdirSync(dir, { mode: 0o700 });
        return dir;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
  }

  /** Where the raw log of the build in `dir` goes while it runs (not in the build dir: the builder owns that). */
  rawLog(dir: string): string {
    return join(this.privateDir(), `${basename(dir)}.log`);
  }

  /**
   * Takes back a build's dir: it is moved into the run's private dir, out of the way of later
   * builds' names, and the caller removes what this returns (the dir itself when it could not be
   * moved).
   */
  release(dir: string): string {
    const done = join(this.privateDir(), `.done-${this.finished++}`);
    try {
      renameSync(dir, done);
      return done;
    } catch {
      return dir;
    }
  }

  /** The run's private dir, made on first use. */
  private privateDir(): string {
    this.root ??= mkdtempSync(join(tmpdir(), 'strata-build-'));
    return this.root;
  }

  /** Removes the private dir and all in it (at the end of the run). */
  close(): void {
    if (this.root !== undefined) removeTree(this.root);
    this.root = undefined;
  }
}
