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
import { type NarHandler, NarParser } from '../core/nar/parser.js';
import { removeTree } from './remove-tree.js';
import type { TreeWriter } from './tree-writer.js';

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
  /**
   * Make the nodes through this writer, on the thread pool, instead of by calls on this thread;
   * used when the restore is canonical into a private parent and the umask leaves the final modes
   * whole (else ignored). The caller then owns the outcome: it settles the writer before using
   * what was made, and on failure abandons the writer and removes the target itself (a failed
   * restore does not, since the writer may still be making nodes there).
   */
  writer?: TreeWriter | undefined;
}

interface Dir {
  path: Buffer;
  /** What it was when made, to notice a swap; none with {@link RestoreOptions.privateParent}. */
  stats: Stats | undefined;
}

const SLASH = 0x2f; // '/'
const FILE_FLAGS = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
/** Nix store objects have mtime 1, not 0: 0 is taken by some tools to mean "unknown". */
const STORE_MTIME = 1;
/** Nodes created between two turns of the event loop (a few ms of synchronous work). */
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
      r.writeWhole(chunk);
      const full = r.writer?.ready();
      if (full) await full;
      // A streamed NAR may hold hundreds of thousands of nodes: let the event loop run between
      // chunks once YIELD_EVERY nodes were made (a 64 KiB chunk holds at most ~500 small ones).
      if (r.madeSinceYield >= YIELD_EVERY) {
        r.madeSinceYield = 0;
        await new Promise<void>((res) => setImmediate(res));
      }
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
    r.writeWhole(nar);
    return r.finish();
  } catch (e) {
    throw r.fail(e);
  }
}

/**
 * A restore fed by the caller, piece by piece, synchronously: for a NAR inside a larger stream
 * (an export, where the NAR is not length-prefixed and its path comes after it), restored as it
 * is read instead of held in memory. `write` returns how many bytes of the piece belong to the NAR
 * (all of them until it ends); `done` tells that it ended. Same checks; `fail` removes what was
 * made and returns the error to throw.
 */
export interface RestoreSink {
  write(piece: Uint8Array): number;
  readonly done: boolean;
  /** The result, with the directory restored into (the caller's staging entry). */
  end(): RestoreResult & { target: string };
  fail(e: unknown): unknown;
  /** A wait while its writer has too much queued ({@link RestoreOptions.writer}). */
  ready(): Promise<void> | undefined;
}

export function startRestore(target: string, options: RestoreOptions = {}): RestoreSink {
  const r = new Restore(target, options);
  return {
    write: (piece) => r.write(piece),
    get done() {
      return r.done;
    },
    end: () => ({ target, ...r.finish() }),
    fail: (e) => r.fail(e),
    ready: () => r.writer?.ready(),
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
 * One restore in progress: the parser, the hash, and the file system objects made so far. It is
 * the parser's {@link NarHandler}: each step of the archive is made as soon as it is parsed.
 *
 * Synchronous calls throughout: a store path is mostly small files, and through the libuv pool
 * each of the ~6 calls per file costs a thread hand-off. On this 2-core VM that made importing
 * 1,000 paths 8× slower than `nix-store --import` (bench/import.ts); Nix makes the same calls
 * synchronously. A streamed restore lets the event loop run between chunks instead.
 */
class Restore implements NarHandler {
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
  /** The file being written: its descriptor, or its writer slot with {@link writer}. */
  private file: { fd: number; executable: boolean } | undefined;
  /** Objects made since the caller last let the event loop run. */
  madeSinceYield = 0;
  /** Where nodes are made when not by calls on this thread ({@link RestoreOptions.writer}). */
  readonly writer: TreeWriter | undefined;

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
    this.writer = this.modesFinal && !this.checked ? options.writer : undefined;
    this.root = Buffer.from(target);
    this.next = this.root;
  }

  get done(): boolean {
    return this.parser.done;
  }

  /** Hashes and restores the part of `chunk` that belongs to the NAR; returns its length. */
  write(chunk: Uint8Array): number {
    const used = this.parser.parse(chunk, this);
    this.hasher.update(used === chunk.length ? chunk : chunk.subarray(0, used));
    this.narSize += used;
    return used;
  }

  /** {@link write} of input that is this NAR and nothing else: trailing bytes are refused. */
  writeWhole(chunk: Uint8Array): void {
    this.hasher.update(chunk);
    this.narSize += chunk.length;
    this.parser.write(chunk, this);
  }

  finish(): RestoreResult {
    this.parser.end();
    this.writer?.boundary();
    return { narHash: new Hash('sha256', this.hasher.digest()), narSize: this.narSize, nodes: this.synced };
  }

  /** Removes whatever was created and returns the error to throw. */
  fail(e: unknown): unknown {
    if (this.writer) return e; // Its owner abandons it, then removes the target.
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

  entry(b: Uint8Array, start: number, end: number): void {
    const parent = this.dirs.at(-1)!.path;
    const next = Buffer.allocUnsafe(parent.length + 1 + end - start);
    parent.copy(next, 0);
    next[parent.length] = SLASH;
    next.set(b.subarray(start, end), parent.length + 1);
    this.next = next;
  }

  regular(executable: boolean): void {
    this.verifyParent();
    const mode = this.fileModes[executable ? 1 : 0];
    const fd = this.writer ? this.writer.openFile(this.next, mode) : openSync(this.next, FILE_FLAGS, mode);
    this.nodes++;
    this.synced++;
    this.madeSinceYield++;
    this.file = { fd, executable };
  }

  contents(b: Uint8Array, start: number, end: number): void {
    const { fd } = this.file!;
    if (this.writer) return this.writer.write(fd, b, start, end);
    while (start < end) start += writeSync(fd, b, start, end - start);
  }

  regularEnd(): void {
    const { fd, executable } = this.file!;
    this.file = undefined;
    if (this.writer) return this.writer.closeFile(fd);
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
  }

  symlink(b: Uint8Array, start: number, end: number): void {
    this.verifyParent();
    const target = Buffer.from(b.buffer, b.byteOffset + start, end - start);
    this.nodes++;
    this.madeSinceYield++;
    if (this.writer) return this.writer.symlink(this.next, target);
    symlinkSync(target, this.next);
    if (this.canonicalise) lutimesSync(this.next, Date.now() / 1000, STORE_MTIME);
  }

  directory(): void {
    this.verifyParent();
    if (this.writer) this.writer.mkdir(this.next);
    else mkdirSync(this.next, 0o777);
    this.nodes++;
    this.synced++;
    this.madeSinceYield++;
    if (!this.checked) {
      this.dirs.push({ path: this.next, stats: undefined });
      return;
    }
    const stats = lstatSync(this.next);
    if (!stats.isDirectory()) throw new StrataError('RESTORE_RACE', `Cannot restore into '${this.next.toString()}': it was replaced while restoring`, { value: this.next.toString() });
    this.dirs.push({ path: this.next, stats });
  }

  directoryEnd(): void {
    const dir = this.dirs.pop()!;
    if (this.writer) {
      this.writer.seal(dir.path);
    } else if (this.canonicalise && dir.stats === undefined) {
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
  }
}
