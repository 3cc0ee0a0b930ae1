/**
 * A private temporary directory that a later process can tell is abandoned: its owner holds an
 * flock on `.owner` inside it for as long as it lives, so a directory whose lock can be taken
 * belongs to a process that is gone (killed mid-upload, with a spooled NAR of any size left in
 * it). Process ids are no test: strata may run in its own pid namespace, and ids are reused.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { openSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { closeFd, lockFdSync, openLockFile, tryLockFd } from './local/flock.js';

const OWNER = '.owner';

/** A directory made by {@link ownedTempDir}; `release()` removes it and drops the lock. */
export interface OwnedDir {
  path: string;
  release(): Promise<void>;
}

/** Removes the directories named `prefix*` in the temp dir whose owner is gone. */
function sweep(prefix: string): void {
  let names: string[];
  try {
    names = readdirSync(tmpdir()).filter((n) => n.startsWith(prefix));
  } catch {
    return;
  }
  for (const name of names) {
    const dir = join(tmpdir(), name);
    let fd: number;
    try {
      // No `.owner` (being made right now, or not made this way): not ours to judge.
      fd = openSync(join(dir, OWNER), 'r');
    } catch {
      continue;
    }
    try {
      if (tryLockFd(fd, 'exclusive')) rmSync(dir, { recursive: true, force: true });
    } catch {
      // Someone else's, or already going: leave it.
    } finally {
      closeFd(fd);
    }
  }
}

/**
 * Makes `<tmpdir>/<prefix>XXXXXX`, locked for this process's life, after removing the ones of
 * dead processes.
 *
 * @example const staging = await ownedTempDir('strata-s3-'); …; await staging.release();
 */
export async function ownedTempDir(prefix: string): Promise<OwnedDir> {
  sweep(prefix);
  const path = await mkdtemp(join(tmpdir(), prefix));
  // Locked under another name first, then renamed: a sweeper never sees an unlocked `.owner`.
  const fresh = join(path, `${OWNER}-new`);
  const fd = openLockFile(fresh);
  lockFdSync(fd, 'exclusive');
  renameSync(fresh, join(path, OWNER));
  return {
    path,
    release: async () => {
      // Removed while still locked, so no sweeper races the removal.
      await rm(path, { recursive: true, force: true });
      closeFd(fd);
    },
  };
}
