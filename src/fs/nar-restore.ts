/**
 * `restoreNar`: unpacks a NAR stream into a new file system object, safely.
 *
 * Safety rests on three things. The strict parser rejects every archive that could name a path
 * twice or leave its directory (duplicates, `..`, `/`, NUL), before anything is created for it.
 * Everything is created exclusively (`O_CREAT|O_EXCL`, `mkdir`, `symlink` all fail on an
 * existing name) and files are opened with `O_NOFOLLOW`, so no existing entry, and no symlink,
 * is ever written through. And before each entry is created, its parent directory is checked to
 * be the very directory (device and inode) this restore made, so a directory swapped for a
 * symlink by someone else is noticed. On any failure the whole target is removed.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants as C, fchmodSync, fstatSync, futimesSync, lstatSync, lutimesSync, mkdirSync, openSync, promises as fsp, type Stats, symlinkSync, writeSync } from 'node:fs';
import type { Readable } from 'node:stream';

import { StrataError } from '../core/error.js';
import { Hash } from '../core/hash.js';
import type { NarEvent } from '../core/nar/format.js';
import { NarParser } from '../core/nar/parser.js';

/** Options for {@link restoreNar}. */
export interface RestoreOptions {
  /**
   * Give everything Nix store metadata: files 0444 (0555 when executable), directories 0555
   * (set once their children are written), mtime 1 (1970-01-01T00:00:01Z) on every node.
   */
  canonicalise?: boolean;
}

interface Dir {
  path: Buffer;
  stats: Stats;
}

const SLASH = Buffer.from('/');
const FILE_FLAGS = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
/** Nix store objects have mtime 1, not 0: 0 is taken by some tools to mean "unknown". */
const STORE_MTIME = 1;
/** Nodes created between two yields to the event loop (a few ms of synchronous work). */
const YIELD_EVERY = 256;

function sameDir(a: Stats, b: Stats): boolean {
  return b.isDirectory() && a.dev === b.dev && a.ino === b.ino;
}

/**
 * Restores the NAR read from `nar` at `target`, which must not exist (its parent must). Returns
 * the sha256 and size of the NAR bytes, computed as they stream by. On any error (a bad archive,
 * an I/O error, a failing input stream) everything created is removed and the error rethrown;
 * archive faults are `NAR_INVALID` errors.
 *
 * @example
 * ```ts
 * const { narHash, narSize } = await restoreNar(fs.createReadStream('x.nar'), '/tmp/out', { canonicalise: true });
 * ```
 */
export async function restoreNar(
  nar: Readable | AsyncIterable<Uint8Array>,
  target: string,
  options: RestoreOptions = {},
): Promise<{ narHash: Hash; narSize: number }> {
  const canonicalise = options.canonicalise ?? false;
  const root = Buffer.from(target);
  const hasher = createHash('sha256');
  let narSize = 0;
  let created = false;
  const dirs: Dir[] = [];
  let next: Buffer = root; // where the next node goes
  let file: { fd: number; executable: boolean } | undefined;
  let sinceYield = 0;

  // Synchronous calls throughout: a store path is mostly small files, and through the libuv pool
  // each of the ~6 calls per file costs a thread hand-off. On this 2-core VM that made
  // importing 1,000 paths 8× slower than `nix-store --import` (bench/import.ts); Nix makes the
  // same calls synchronously. The loop yields to the event loop every 256 nodes instead.
  const verifyParent = (): void => {
    const top = dirs.at(-1);
    if (!top) return;
    const now = lstatSync(top.path);
    if (!sameDir(top.stats, now)) {
      throw new StrataError('RESTORE_RACE', `Cannot restore into '${top.path.toString()}': it is no longer the directory this restore created`, { value: top.path.toString() });
    }
  };

  const handle = (ev: NarEvent): void => {
    switch (ev.type) {
      case 'entry':
        next = Buffer.concat([dirs.at(-1)!.path, SLASH, ev.name]);
        return;
      case 'regular': {
        verifyParent();
        const fd = openSync(next, FILE_FLAGS, 0o666);
        created = true;
        file = { fd, executable: ev.executable };
        return;
      }
      case 'contents': {
        const { fd } = file!;
        let off = 0;
        while (off < ev.chunk.length) off += writeSync(fd, ev.chunk, off, ev.chunk.length - off);
        return;
      }
      case 'regularEnd': {
        const { fd, executable } = file!;
        file = undefined;
        try {
          if (canonicalise) {
            fchmodSync(fd, executable ? 0o555 : 0o444);
            futimesSync(fd, Date.now() / 1000, STORE_MTIME);
          } else if (executable) {
            // As Nix does: add every execute bit to what the umask left.
            fchmodSync(fd, (fstatSync(fd).mode & 0o7777) | 0o111);
          }
        } finally {
          closeSync(fd);
        }
        return;
      }
      case 'symlink':
        verifyParent();
        symlinkSync(Buffer.from(ev.target), next);
        created = true;
        if (canonicalise) lutimesSync(next, Date.now() / 1000, STORE_MTIME);
        return;
      case 'directory': {
        verifyParent();
        mkdirSync(next, 0o777);
        created = true;
        const stats = lstatSync(next);
        if (!stats.isDirectory()) throw new StrataError('RESTORE_RACE', `Cannot restore into '${next.toString()}': it was replaced while restoring`, { value: next.toString() });
        dirs.push({ path: next, stats });
        return;
      }
      case 'directoryEnd': {
        const dir = dirs.pop()!;
        if (canonicalise) {
          // Through an O_NOFOLLOW descriptor, checked to be our directory: chmod by path would follow a swapped-in symlink.
          const fd = openSync(dir.path, DIR_FLAGS);
          try {
            if (!sameDir(dir.stats, fstatSync(fd))) throw new StrataError('RESTORE_RACE', `Cannot restore into '${dir.path.toString()}': it was replaced while restoring`, { value: dir.path.toString() });
            fchmodSync(fd, 0o555);
            futimesSync(fd, Date.now() / 1000, STORE_MTIME);
          } finally {
            closeSync(fd);
          }
        }
        return;
      }
    }
  };

  const parser = new NarParser();
  try {
    for await (const chunk of nar as AsyncIterable<Uint8Array>) {
      hasher.update(chunk);
      narSize += chunk.length;
      for (const ev of parser.feed(chunk)) {
        handle(ev);
        if (ev.type !== 'contents' && ++sinceYield >= YIELD_EVERY) {
          sinceYield = 0;
          await new Promise<void>((res) => setImmediate(res));
        }
      }
    }
    parser.end();
    return { narHash: new Hash('sha256', hasher.digest()), narSize };
  } catch (e) {
    if (file) {
      try {
        closeSync(file.fd);
      } catch {
        // Closing is best effort on the way out.
      }
    }
    if (created) await removeTree(root);
    if (!created && (e as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new StrataError('PATH_EXISTS', `Cannot restore to '${target}': it already exists`, { value: target, cause: e });
    }
    throw e;
  }
}

/** Removes what a failed restore left, making canonicalised (0555) directories writable first. */
async function removeTree(path: Buffer): Promise<void> {
  try {
    await fsp.rm(path, { recursive: true, force: true });
  } catch {
    await makeWritable(path);
    await fsp.rm(path, { recursive: true, force: true });
  }
}

async function makeWritable(path: Buffer): Promise<void> {
  const st = await fsp.lstat(path).catch(() => undefined);
  if (!st?.isDirectory()) return;
  await fsp.chmod(path, 0o700);
  for (const name of await fsp.readdir(path, { encoding: 'buffer' })) await makeWritable(Buffer.concat([path, SLASH, name]));
}
