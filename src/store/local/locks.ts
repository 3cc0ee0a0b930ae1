/**
 * The lock files real Nix uses, with its conventions:
 * - `<real>/<hash>-<name>.lock`, exclusive around adding or building a path. A holder that is
 *   done unlinks the file and writes `d` into it, so a waiter that then gets the lock on the
 *   unlinked inode sees a non-empty file and knows to reopen (the "stale" convention).
 * - `<state>/temproots/<pid>`: this process's temporary GC roots, `path\0` appended, locked
 *   exclusively for the process's lifetime so the collector can tell live owners from dead ones.
 * - `<state>/gc.lock`: exclusive for a collection; shared while adding a temp root.
 */
import { closeSync, fstatSync, mkdirSync, openSync, readSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';

import { closeFd, lockFd, openLockFile, tryLockFd, unlockFd } from './flock.js';

/** A held per-path lock. */
export class PathLock {
  private constructor(
    readonly lockPath: string,
    private fd: number,
  ) {}

  /** Waits for the exclusive lock on `lockPath`, skipping stale (already released) files. */
  static async acquire(lockPath: string): Promise<PathLock> {
    for (;;) {
      const fd = openLockFile(lockPath);
      // Uncontended (the usual case) without a thread-pool round trip; wait in the pool only when held.
      if (!tryLockFd(fd, 'exclusive')) await lockFd(fd, 'exclusive');
      if (!isStale(fd)) return new PathLock(lockPath, fd);
      closeFd(fd); // A previous holder released and unlinked it: take a fresh file.
    }
  }

  /** A lock taken elsewhere (a tree writer's LOCK operation): `fd`, locked and not stale. */
  static adopt(lockPath: string, fd: number): PathLock {
    return new PathLock(lockPath, fd);
  }

  /** Non-blocking variant; undefined when another process holds it. */
  static tryAcquire(lockPath: string): PathLock | undefined {
    const fd = openLockFile(lockPath);
    if (!tryLockFd(fd, 'exclusive') || isStale(fd)) {
      closeFd(fd);
      return undefined;
    }
    return new PathLock(lockPath, fd);
  }

  /** Releases the lock, unlinking the file and marking it stale for anyone waiting on it. */
  release(): void {
    if (this.fd < 0) return;
    try {
      unlinkSync(this.lockPath);
    } catch {
      // Someone removed it already (a GC of leftovers); the `d` still marks the inode stale.
    }
    try {
      writeSync(this.fd, 'd');
    } finally {
      closeFd(this.fd);
      this.fd = -1;
    }
  }
}

const ONE = Buffer.alloc(1);

/**
 * Whether a lock file holds the `d` a releasing holder writes. One byte read at offset 0, not an
 * fstat: Node builds a Stats object with four Dates per fstat, and an import takes 1,000 locks.
 */
function isStale(fd: number): boolean {
  return readSync(fd, ONE, 0, 1, 0) > 0;
}

/** The order several locks are taken in (as Nix does): sorted, each once, so two processes cannot deadlock. */
export function lockOrder(lockPaths: string[]): string[] {
  return [...new Set(lockPaths)].sort();
}

/**
 * Takes several path locks in {@link lockOrder}. `taken`, aligned with that order, holds the
 * descriptors of locks taken already (a tree writer's LOCK operations: a prefix of the order),
 * -1 for the others.
 */
export async function acquirePathLocks(lockPaths: string[], taken: readonly number[] = []): Promise<PathLock[]> {
  const order = lockOrder(lockPaths);
  const held: PathLock[] = [];
  let i = 0;
  try {
    for (; i < order.length; i++) {
      const fd = taken[i] ?? -1;
      held.push(fd >= 0 ? PathLock.adopt(order[i]!, fd) : await PathLock.acquire(order[i]!));
    }
    return held;
  } catch (e) {
    for (const l of held) l.release();
    releaseTaken(order.slice(i), taken.slice(i));
    throw e;
  }
}

/** Releases locks taken as {@link acquirePathLocks}'s `taken` describes them, without using them. */
export function releaseTaken(order: string[], taken: readonly number[]): void {
  for (const [i, fd] of taken.entries()) if (fd >= 0) PathLock.adopt(order[i]!, fd).release();
}

/** This process's temp-roots file; paths added here survive a concurrent GC. */
export class TempRoots {
  private fd = -1;
  private readonly file: string;
  private readonly added = new Set<string>();
  private gcLock: number | undefined;
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly stateDir: string) {
    this.file = join(stateDir, 'temproots', String(process.pid));
  }

  private async open(): Promise<void> {
    if (this.fd >= 0) return;
    mkdirSync(join(this.stateDir, 'temproots'), { recursive: true });
    for (;;) {
      rmSync(this.file, { force: true });
      const fd = openSync(this.file, 'a+', 0o600);
      await lockFd(fd, 'exclusive');
      // Non-empty after locking: a GC found it ownerless and marked it; start again.
      if (fstatSync(fd).size === 0) {
        this.fd = fd;
        return;
      }
      closeFd(fd);
    }
  }

  /** Records `fullPath` as a temporary root, waiting for a running GC to finish first. */
  async add(fullPath: string): Promise<void> {
    await this.addMany([fullPath]);
  }

  /**
   * Records several temporary roots with one `gc.lock` round and one write: a GC that starts
   * after this returns sees them all. The `gc.lock` descriptor is opened once and kept, not
   * opened and closed per root.
   */
  addMany(fullPaths: string[]): Promise<void> {
    if (fullPaths.every((p) => this.added.has(p))) return Promise.resolve();
    // One at a time: two callers sharing the one gc.lock descriptor would share its lock too, and
    // the first to finish would unlock it under the second.
    const run = this.queue.then(() => this.addNow(fullPaths));
    this.queue = run.catch(() => {});
    return run;
  }

  private async addNow(fullPaths: string[]): Promise<void> {
    const fresh = [...new Set(fullPaths)].filter((p) => !this.added.has(p));
    if (fresh.length === 0) return;
    await this.open();
    this.gcLock ??= openLockFile(join(this.stateDir, 'gc.lock'));
    const gcLock = this.gcLock;
    if (!tryLockFd(gcLock, 'shared')) await lockFd(gcLock, 'shared');
    try {
      writeAll(this.fd, Buffer.from(fresh.map((p) => `${p}\0`).join('')));
      for (const p of fresh) this.added.add(p);
    } finally {
      unlockFd(gcLock);
    }
  }

  close(): void {
    if (this.gcLock !== undefined) closeFd(this.gcLock);
    this.gcLock = undefined;
    if (this.fd < 0) return;
    try {
      unlinkSync(this.file);
    } catch {
      // Gone already.
    }
    closeSync(this.fd);
    this.fd = -1;
  }
}

/** Writes all of `bytes` (a temp-roots record must not be cut short by a partial write). */
function writeAll(fd: number, bytes: Buffer): void {
  for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
}

/** The shared big-lock every read-write store holds while open (`<state>/db/big-lock`). */
export class BigLock {
  private constructor(private fd: number) {}

  static async acquireShared(dbDir: string): Promise<BigLock> {
    const fd = openLockFile(join(dbDir, 'big-lock'));
    if (!tryLockFd(fd, 'shared')) await lockFd(fd, 'shared');
    return new BigLock(fd);
  }

  release(): void {
    if (this.fd >= 0) closeFd(this.fd);
    this.fd = -1;
  }
}
