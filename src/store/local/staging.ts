/**
 * Staging directories inside the real store dir, named `tmp-<pid>-<n>` as Nix names its own and
 * locked for as long as they are in use: the garbage collector deletes `tmp-*` entries it can
 * lock, and leaves those it cannot. New store objects are written here first and renamed into
 * place only when complete, so no half-written object is ever visible under a store path.
 */
import { fstatSync, lstatSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';

import { removeTree } from '../../fs/remove-tree.js';
import { closeFd, tryLockFd } from './flock.js';

let counter = 0;

export class StagingDir {
  private entries = 0;

  private constructor(
    readonly path: string,
    private fd: number,
  ) {}

  static create(realStoreDir: string): StagingDir {
    for (;;) {
      const path = join(realStoreDir, `tmp-${process.pid}-${counter++}`);
      try {
        mkdirSync(path, { mode: 0o700 });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
        throw e;
      }
      // Between the mkdir and the lock a collector may lock the new dir and delete it (it takes
      // every `tmp-*` it can lock): keep it only when we hold the lock and it is still the dir at
      // `path`; otherwise try the next name.
      let fd: number;
      try {
        fd = openSync(path, 'r');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw e;
      }
      if (tryLockFd(fd, 'exclusive') && stillAt(fd, path)) return new StagingDir(path, fd);
      closeFd(fd);
    }
  }

  /**
   * A fresh name inside this directory, for one object. A store stages every object it adds in
   * one staging directory while any add is in progress (not an mkdir, open, flock, removal and
   * close in the store dir per object), so entries must not collide.
   */
  entry(): string {
    return join(this.path, String(this.entries++));
  }

  /** Removes the directory and whatever is left in it, then releases the lock. */
  dispose(): void {
    if (this.fd < 0) return;
    removeTree(this.path);
    closeFd(this.fd);
    this.fd = -1;
  }
}

/** Whether the directory open as `fd` is still the one named `path` (not deleted, not replaced). */
function stillAt(fd: number, path: string): boolean {
  try {
    const open = fstatSync(fd);
    const named = lstatSync(path);
    return open.nlink > 0 && open.ino === named.ino && open.dev === named.dev;
  } catch {
    return false;
  }
}
