/**
 * `flock(2)` for Node, behind one small adapter (the native `fs-ext` addon). These are the same
 * advisory locks real Nix takes, so strata and Nix exclude each other; a mkdir-based imitation
 * would not be seen by Nix.
 */
import { closeSync, openSync } from 'node:fs';

import { flock, flockSync } from 'fs-ext';

export type LockKind = 'shared' | 'exclusive';

/** Waits for the lock (in the thread pool, so the event loop keeps running). */
export function lockFd(fd: number, kind: LockKind): Promise<void> {
  return new Promise((resolve, reject) => {
    flock(fd, kind === 'shared' ? 'sh' : 'ex', (err) => (err ? reject(err) : resolve()));
  });
}

/** Waits for the lock, blocking the thread (for the few callers that cannot be async). */
export function lockFdSync(fd: number, kind: LockKind): void {
  flockSync(fd, kind === 'shared' ? 'sh' : 'ex');
}

/** Takes the lock if it is free; false when another holder has it. */
export function tryLockFd(fd: number, kind: LockKind): boolean {
  try {
    flockSync(fd, kind === 'shared' ? 'shnb' : 'exnb');
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return false;
    throw e;
  }
}

export function unlockFd(fd: number): void {
  flockSync(fd, 'un');
}

/** Opens (creating with mode 0600, as Nix does) a lock file and returns its descriptor. */
export function openLockFile(path: string): number {
  return openSync(path, 'a+', 0o600);
}

export function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // Already closed: nothing to release.
  }
}
