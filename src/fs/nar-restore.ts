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
import { chmodSync, closeSync, constants as C, fchmodSync, fstatSync, futimesSync, lstatSync, lutimesSync, mkdirSync, openSync, type Stats, symlinkSync, writeSync } from 'node:fs';
import type { Readable } from 'node:stream';

import { StrataError } from '../core/error.js';
import { Hash } from '../core/hash.js';
import type { NarEvent } from '../core/nar/format.js';
import { NarParser } from '../core/nar/parser.js';
import { removeTree } from './remove-tree.js';

/** Options for {@link restoreNar}. */
export interface RestoreOptions {
  /**
   * Give everything Nix store metadata: files 0444 (0555 when executable), directories 0555
   * (set once their children are written), mtime 1 (1970-01-01T00:00:01Z) on every node.
   */
  canonicalise?: boolean;
  /**
   * The target's parent is a directory that only this process's user can enter (a store's 0700
   * staging dir): nobody else can swap a directory of the tree for a symlink while it is being
   * restored, so the check before each node is skipped and directories get their canonical
   * metadata by path. 3 system calls per directory instead of 8 and 4 per file instead of 6:
   * a median store path has ~3 directories and ~4.5 files, so 23 fewer per path.
   */
  privateParent?: boolean;
  /**
   * The process's umask, when the caller has read it (once for a batch of restores: reading it
   * means setting it twice, ~24 µs here); read per restore otherwise.
   */
  umask?: number;
}

interface Dir {
  path: Buffer;
  /** What it was when made, to notice a swap; none with {@link RestoreOptions.privateParent}. */
  stats: Stats | undefined;
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
): Promise<RestoreResult> {
  const r = new Restore(target, options);
  try {
    for await (const chunk of nar as AsyncIterable<Uint8Array>) {
      for (let paused = r.feed(chunk); paused; paused = r.resume()) await new Promise<void>((res) => setImmediate(res));
    }
    return r.finish();
  } catch (e) {
    throw r.fail(e);
  }
}

/**
 * {@link restoreNar} of a NAR already in memory, synchronously: no stream, no promise per chunk.
 * For the many small NARs of an import or a copy (a median store path's NAR is ~20 KiB), where
 * that machinery cost as much as the restore itself. Same checks, same cleanup on failure.
 */
export function restoreNarSync(nar: Uint8Array, target: string, options: RestoreOptions = {}): RestoreResult {
  const r = new Restore(target, options);
  try {
    r.feed(nar, false);
    return r.finish();
  } catch (e) {
    throw r.fail(e);
  }
}

/**
 * A restore fed by the caller, piece by piece, synchronously: for a NAR whose end the caller
 * finds itself (an export stream, where the NAR is not length-prefixed and its path comes after
 * it), restored as it is read instead of held in memory. Same checks; `fail` removes what was made
 * and returns the error to throw.
 */
export interface RestoreSink {
  write(piece: Uint8Array): void;
  end(): RestoreResult;
  fail(e: unknown): unknown;
}

export function startRestore(target: string, options: RestoreOptions = {}): RestoreSink {
  const r = new Restore(target, options);
  return {
    write: (piece) => {
      r.feed(piece, false);
    },
    end: () => r.finish(),
    fail: (e) => r.fail(e),
  };
}

/** What a restore read and made. */
export interface RestoreResult {
  narHash: Hash;
  narSize: number;
  /**
   * Files and directories created: what a later fsync walk visits, and what decides between
   * fsyncs and one syncfs (store/local/durable.ts). Symlinks are not counted: one is durable
   * with its directory's entry, and a profile of hundreds of them needs only its directories'.
   */
  nodes: number;
}

/**
 * One restore in progress: the parser, the hash, and the file system objects made so far.
 *
 * Synchronous calls throughout: a store path is mostly small files, and through the libuv pool
 * each of the ~6 calls per file costs a thread hand-off. On this 2-core VM that made importing
 * 1,000 paths 8× slower than `nix-store --import` (bench/import.ts); Nix makes the same calls
 * synchronously. A streamed restore pauses for the event loop every 256 nodes instead.
 */
class Restore {
  private readonly canonicalise: boolean;
  private readonly checked: boolean;
  /**
   * Creation mode of regular files (non-executable, executable) when canonicalising: the final
   * one when the umask leaves it whole (022 does), so no fchmod follows; else 0666.
   */
  private readonly fileModes: readonly [number, number];
  /** Whether {@link fileModes} are the final modes already. */
  private readonly modesFinal: boolean;
  private readonly root: Buffer;
  private readonly hasher = createHash('sha256');
  private readonly parser = new NarParser();
  private narSize = 0;
  /** Every object created, symlinks included (anything made is removed on failure). */
  private nodes = 0;
  /** Files and directories created (the result's `nodes`). */
  private synced = 0;
  private readonly dirs: Dir[] = [];
  private next: Buffer; // where the next node goes
  private file: { fd: number; executable: boolean } | undefined;
  private sinceYield = 0;
  /** The events of the chunk being restored, kept while paused for the event loop. */
  private events: Iterator<NarEvent> | undefined;
  private yields = true;

  constructor(
    private readonly target: string,
    options: RestoreOptions,
  ) {
    this.canonicalise = options.canonicalise ?? false;
    this.checked = !(options.privateParent ?? false);
    // process.umask() reads by setting and restoring it: 2 system calls per NAR, against the
    // fchmod per file it saves. Nothing else runs on this thread until the restore is done.
    this.modesFinal = this.canonicalise && ((options.umask ?? process.umask()) & 0o555) === 0;
    this.fileModes = this.modesFinal ? [0o444, 0o555] : [0o666, 0o666];
    this.root = Buffer.from(target);
    this.next = this.root;
  }

  /**
   * Hashes and restores one chunk. Returns true when it paused (every {@link YIELD_EVERY} nodes)
   * for the caller to let the event loop run and then call {@link resume}; with `yields` false it
   * restores the whole chunk at once.
   */
  feed(chunk: Uint8Array, yields = true): boolean {
    this.hasher.update(chunk);
    this.narSize += chunk.length;
    this.events = this.parser.feed(chunk);
    this.yields = yields;
    return this.resume();
  }

  /** Goes on with the chunk {@link feed} paused in; false once the chunk is done. */
  resume(): boolean {
    const events = this.events!;
    for (let it = events.next(); !it.done; it = events.next()) {
      const ev = it.value;
      this.handle(ev);
      if (ev.type !== 'contents' && ++this.sinceYield >= YIELD_EVERY && this.yields) {
        this.sinceYield = 0;
        return true;
      }
    }
    this.events = undefined;
    return false;
  }

  finish(): RestoreResult {
    this.parser.end();
    return { narHash: new Hash('sha256', this.hasher.digest()), narSize: this.narSize, nodes: this.synced };
  }

  /** Removes whatever was created and returns the error to throw. */
  fail(e: unknown): unknown {
    if (this.file) {
      try {
        closeSync(this.file.fd);
      } catch {
        // Closing is best effort on the way out.
      }
      this.file = undefined;
    }
    if (this.nodes > 0) removeTree(this.root);
    if (this.nodes === 0 && (e as NodeJS.ErrnoException).code === 'EEXIST') {
      return new StrataError('PATH_EXISTS', `Cannot restore to '${this.target}': it already exists`, { value: this.target, cause: e });
    }
    return e;
  }

  private verifyParent(): void {
    if (!this.checked) return;
    const top = this.dirs.at(-1);
    if (!top) return;
    const now = lstatSync(top.path);
    if (!sameDir(top.stats!, now)) {
      throw new StrataError('RESTORE_RACE', `Cannot restore into '${top.path.toString()}': it is no longer the directory this restore created`, { value: top.path.toString() });
    }
  }

  private handle(ev: NarEvent): void {
    switch (ev.type) {
      case 'entry':
        this.next = Buffer.concat([this.dirs.at(-1)!.path, SLASH, ev.name]);
        return;
      case 'regular': {
        this.verifyParent();
        const fd = openSync(this.next, FILE_FLAGS, this.fileModes[ev.executable ? 1 : 0]);
        this.nodes++;
        this.synced++;
        this.file = { fd, executable: ev.executable };
        return;
      }
      case 'contents': {
        const { fd } = this.file!;
        let off = 0;
        while (off < ev.chunk.length) off += writeSync(fd, ev.chunk, off, ev.chunk.length - off);
        return;
      }
      case 'regularEnd': {
        const { fd, executable } = this.file!;
        this.file = undefined;
        try {
          if (this.canonicalise) {
            if (!this.modesFinal) fchmodSync(fd, executable ? 0o555 : 0o444);
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
        this.verifyParent();
        symlinkSync(Buffer.from(ev.target), this.next);
        this.nodes++;
        if (this.canonicalise) lutimesSync(this.next, Date.now() / 1000, STORE_MTIME);
        return;
      case 'directory': {
        this.verifyParent();
        mkdirSync(this.next, 0o777);
        this.nodes++;
        this.synced++;
        if (!this.checked) {
          this.dirs.push({ path: this.next, stats: undefined });
          return;
        }
        const stats = lstatSync(this.next);
        if (!stats.isDirectory()) throw new StrataError('RESTORE_RACE', `Cannot restore into '${this.next.toString()}': it was replaced while restoring`, { value: this.next.toString() });
        this.dirs.push({ path: this.next, stats });
        return;
      }
      case 'directoryEnd': {
        const dir = this.dirs.pop()!;
        if (this.canonicalise && dir.stats === undefined) {
          chmodSync(dir.path, 0o555);
          lutimesSync(dir.path, Date.now() / 1000, STORE_MTIME);
        } else if (this.canonicalise) {
          // Through an O_NOFOLLOW descriptor, checked to be our directory: chmod by path would follow a swapped-in symlink.
          const fd = openSync(dir.path, DIR_FLAGS);
          try {
            if (!sameDir(dir.stats!, fstatSync(fd))) throw new StrataError('RESTORE_RACE', `Cannot restore into '${dir.path.toString()}': it was replaced while restoring`, { value: dir.path.toString() });
            fchmodSync(fd, 0o555);
            futimesSync(fd, Date.now() / 1000, STORE_MTIME);
          } finally {
            closeSync(fd);
          }
        }
        return;
      }
    }
  }
}
