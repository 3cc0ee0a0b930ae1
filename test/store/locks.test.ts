/**
 * Per-path locks and Nix's "stale" convention: a holder that is done unlinks the lock file and
 * writes `d` into it, so a waiter that then gets the lock on the unlinked inode opens a fresh one.
 */
import { existsSync, openSync, statSync, writeFileSync, closeSync, fstatSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { PathLock } from '../../src/store/local/locks.js';
import { tempDir } from '../support/tmp.js';

describe('PathLock', () => {
  it('a waiter woken by a release does not keep the released (unlinked, marked) file', async () => {
    const lockPath = join(tempDir(), 'x.lock');
    const first = await PathLock.acquire(lockPath);
    let second: PathLock | undefined;
    const waiting = PathLock.acquire(lockPath).then((l) => (second = l));
    await new Promise((r) => setTimeout(r, 50));
    expect(second).toBeUndefined();
    first.release();
    await waiting;
    // The waiter holds the file now at the path (not the unlinked one the first holder marked):
    // a third process opening the path finds it locked.
    expect(existsSync(lockPath)).toBe(true);
    expect(statSync(lockPath).size).toBe(0);
    expect(PathLock.tryAcquire(lockPath)).toBeUndefined();
    second!.release();
    expect(existsSync(lockPath)).toBe(false);
  });

  it('tryAcquire refuses a marked file and takes an empty one', () => {
    const dir = tempDir();
    const marked = join(dir, 'm.lock');
    writeFileSync(marked, 'd');
    expect(PathLock.tryAcquire(marked)).toBeUndefined();
    const fresh = join(dir, 'f.lock');
    const fd = openSync(fresh, 'w');
    expect(fstatSync(fd).size).toBe(0);
    closeSync(fd);
    const l = PathLock.tryAcquire(fresh);
    expect(l).toBeDefined();
    l!.release();
  });
});
