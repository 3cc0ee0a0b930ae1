/**
 * Staging directories inside the real store dir, named `tmp-<pid>-<n>` as Nix names its own and
 * locked for as long as they are in use: the garbage collector deletes `tmp-*` entries it can
 * lock, and leaves those it cannot. New store objects are written here first and renamed into
 * place only when complete, so no half-written object is ever visible under a store path.
 */
import { chmodSync, lstatSync, mkdirSync, openSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

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
      const fd = openSync(path, 'r');
      tryLockFd(fd, 'exclusive');
      return new StagingDir(path, fd);
    }
  }

  /**
   * A fresh name inside this directory, for one object. A store keeps one staging directory for
   * its whole life and stages every new object in it (not an mkdir, open, flock, removal and close in
   * the store dir per object), so entries must not collide.
   */
  entry(): string {
    return join(this.path, String(this.entries++));
  }

  /** Removes the directory and whatever is left in it, then releases the lock. */
  dispose(): void {
    if (this.fd < 0) return;
    rmSync(this.path, { recursive: true, force: true });
    closeFd(this.fd);
    this.fd = -1;
  }
}

/**
 * Removes a file system object whatever its modes: store objects are read-only (dirs 0555), so
 * directories are made writable before their children are unlinked.
 */
export function removeTree(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EACCES' && (e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
    makeWritable(path);
    rmSync(path, { recursive: true, force: true });
  }
}

function makeWritable(path: string): void {
  // As root rmSync never needs this; it matters when strata runs as an ordinary user.
  const st = lstatSync(path);
  if (!st.isDirectory()) return;
  chmodSync(path, 0o755);
  for (const e of readdirSync(path)) makeWritable(join(path, e));
}
