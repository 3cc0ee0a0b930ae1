/**
 * Internal: walks a file system object and feeds it to a {@link NarWriter}. Shared by
 * `dumpPath` (stream out) and `hashPath` (hash in place); {@link readSortedDir} is the one
 * canonical entry order both use.
 *
 * Two regimes, chosen by measurement on a 2-core VM (bench/nar-hash.ts):
 * - Metadata, directories and small files (≤ 64 KiB) use synchronous calls. A tree of 100,000
 *   small files needs ~400,000 syscalls whatever we do (Nix makes the same ones); through the
 *   libuv pool each costs a thread hand-off, which made the walk 6× slower than Nix (8.7 s vs
 *   1.4 s), while synchronous calls cost what they cost Nix. To keep the event loop responsive
 *   the walk yields to it every 256 entries (a few ms).
 * - Big files are read asynchronously in 1 MiB chunks, and the read of chunk n+1 is in flight
 *   while chunk n is hashed or pushed (double buffering), so I/O and hashing overlap.
 *
 * The directory listing gives each entry's type, so directories and symlinks need no lstat;
 * a regular file is opened first and then fstat'ed (size and owner-x bit), which is one path
 * lookup instead of two. Anything that is not what the listing said (it changed under us) or
 * that the listing could not type goes through lstat, as before.
 */
import { close, closeSync, constants as C, type Dirent, fstatSync, lstatSync, open, openSync as openSyncRaw, read, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs';

import { StrataError } from '../core/error.js';
import { compareNames } from '../core/nar/format.js';
import type { NarWriter } from '../core/nar/writer.js';

/** Read size for big files: 1 MiB amortises syscall and hash-call overhead. */
export const CHUNK_SIZE = 1024 * 1024;
/** Files up to this size are read whole with one synchronous read. */
const SMALL_FILE = 64 * 1024;
/** Entries between two yields to the event loop. */
const YIELD_EVERY = 256;
/** O_NONBLOCK: a FIFO swapped in after the listing must not block the open (no effect on regular files). */
export const OPEN_FLAGS = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK;

/** How the walker hands out bytes. */
export interface WalkOptions {
  /** True when the writer's consumer is done with each chunk before `contents()` returns (hashing), so read buffers can be reused. */
  reuseBuffers: boolean;
  /** Called at safe points; return a promise to pause the walk (stream backpressure). */
  checkpoint?: () => Promise<void> | undefined;
}

const openP = (p: Buffer): Promise<number> => new Promise((res, rej) => open(p, OPEN_FLAGS, (e, fd) => (e ? rej(e) : res(fd))));
const closeP = (fd: number): Promise<void> => new Promise((res, rej) => close(fd, (e) => (e ? rej(e) : res())));
const readP = (fd: number, buf: Buffer, len: number, pos: number): Promise<number> =>
  new Promise((res, rej) => read(fd, buf, 0, len, pos, (e, n) => (e ? rej(e) : res(n))));

function changed(path: Buffer): never {
  throw new StrataError('FILE_CHANGED', `Cannot dump '${path.toString()}': the file changed size while it was read`, { value: path.toString() });
}

function unsupported(path: Buffer, stats: Stats): never {
  const kind = stats.isSocket() ? 'a socket' : stats.isFIFO() ? 'a FIFO' : stats.isCharacterDevice() ? 'a character device' : stats.isBlockDevice() ? 'a block device' : 'of an unknown type';
  throw new StrataError('FILE_TYPE_UNSUPPORTED', `Cannot dump '${path.toString()}': it is ${kind}`, { value: path.toString() });
}

/** The entries of a directory in NAR order (raw bytes, memcmp), with their types from the listing. */
export function readSortedDir(path: Buffer): Array<Dirent<Buffer>> {
  return readdirSync(path, { encoding: 'buffer', withFileTypes: true }).sort((a, b) => compareNames(a.name, b.name));
}

/** `dir` + '/' + `name`, as the byte path the next syscall takes. */
export function childPath(dir: Buffer, name: Buffer): Buffer {
  const out = Buffer.allocUnsafe(dir.length + 1 + name.length);
  dir.copy(out, 0);
  out[dir.length] = 0x2f;
  name.copy(out, dir.length + 1);
  return out;
}

/** Walk state shared by every node: the reusable small-file buffer and the yield counter. */
export interface Walk {
  writer: NarWriter;
  options: WalkOptions;
  /** Made on first use, and only when buffers are reused (hashing): a dump reads into fresh ones. */
  small: Buffer | undefined;
  sinceYield: number;
}

/** The walk's reusable small-file buffer, made on first use. */
function smallBuffer(w: Walk): Buffer {
  return (w.small ??= Buffer.allocUnsafe(SMALL_FILE));
}

/** Reads `size` bytes of an open file from offset 0 into `buf`, synchronously. */
function readWhole(fd: number, path: Buffer, buf: Buffer, size: number): void {
  let got = 0;
  while (got < size) {
    const n = readSync(fd, buf, got, size - got, got);
    if (n === 0) changed(path);
    got += n;
  }
}

/** Streams a big file: the read of chunk n+1 runs while chunk n is hashed or pushed. */
export async function streamFile(path: Buffer, size: number, writer: NarWriter, options: WalkOptions): Promise<void> {
  const fd = await openP(path);
  let pending: Promise<{ buf: Buffer; n: number }> | undefined;
  try {
    const spare = options.reuseBuffers ? [Buffer.allocUnsafe(CHUNK_SIZE), Buffer.allocUnsafe(CHUNK_SIZE)] : [];
    let flip = 0;
    const next = (pos: number): Promise<{ buf: Buffer; n: number }> | undefined => {
      if (pos >= size) return undefined;
      const len = Math.min(CHUNK_SIZE, size - pos);
      const buf = options.reuseBuffers ? spare[flip++ & 1]! : Buffer.allocUnsafe(len);
      return readP(fd, buf, len, pos).then((n) => ({ buf, n }));
    };
    let pos = 0;
    pending = next(0);
    while (pending) {
      const { buf, n } = await pending;
      if (n === 0) changed(path);
      pos += n;
      pending = next(pos);
      writer.contents(n === buf.length ? buf : buf.subarray(0, n));
      const wait = options.checkpoint?.();
      if (wait) await wait;
    }
  } finally {
    // Left early (a destroyed stream, a failed write): the read of the next chunk may still be
    // running on this descriptor. It settles first, so it neither fails unheard with EBADF (an
    // unhandled rejection ends the process) nor reads a file that reuses the number.
    await pending?.catch(() => {});
    await closeP(fd);
  }
}

/**
 * A regular file the listing announced: open, fstat, and for a small one read it whole. Returns
 * false (nothing written) when it is not a regular file any more, so the caller falls back to lstat.
 */
async function listedFile(w: Walk, path: Buffer): Promise<boolean> {
  let fd: number;
  try {
    fd = openSync(path);
  } catch (e) {
    // ELOOP: it became a symlink; ENOENT and the rest: let lstat give the error.
    if ((e as NodeJS.ErrnoException).code) return false;
    throw e;
  }
  let big: number;
  let exec: boolean;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return false;
    exec = (st.mode & 0o100) !== 0;
    if (st.size <= SMALL_FILE) {
      // A retained chunk (dumpPath) needs its own buffer; a hashed one can share.
      const buf = w.options.reuseBuffers ? smallBuffer(w) : Buffer.allocUnsafe(st.size);
      readWhole(fd, path, buf, st.size);
      w.writer.regular(exec, st.size);
      if (st.size > 0) w.writer.contents(buf.length === st.size ? buf : buf.subarray(0, st.size));
      w.writer.regularEnd();
      return true;
    }
    big = st.size;
  } finally {
    closeSync(fd);
  }
  w.writer.regular(exec, big);
  await streamFile(path, big, w.writer, w.options);
  w.writer.regularEnd();
  return true;
}

const openSync = (path: Buffer): number => openSyncRaw(path, OPEN_FLAGS);

/** The target of a symlink the listing announced, or undefined when it is not one any more (EINVAL) or gone. */
export function listedSymlink(path: Buffer): Buffer | undefined {
  try {
    return readlinkSync(path, { encoding: 'buffer' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code) return undefined;
    throw e;
  }
}

/** Any node, typed by lstat (the root, and entries the listing could not vouch for). */
async function node(w: Walk, path: Buffer, stats: Stats): Promise<void> {
  const { writer, options } = w;
  if (stats.isSymbolicLink()) {
    writer.symlink(readlinkSync(path, { encoding: 'buffer' }));
  } else if (stats.isFile()) {
    // Nix writes the executable marker iff the owner-execute bit is set.
    writer.regular((stats.mode & 0o100) !== 0, stats.size);
    if (stats.size > SMALL_FILE) await streamFile(path, stats.size, writer, options);
    else if (stats.size > 0) {
      const fd = openSync(path);
      try {
        const buf = options.reuseBuffers ? smallBuffer(w) : Buffer.allocUnsafe(stats.size);
        readWhole(fd, path, buf, stats.size);
        writer.contents(buf.length === stats.size ? buf : buf.subarray(0, stats.size));
      } finally {
        closeSync(fd);
      }
    }
    writer.regularEnd();
  } else if (stats.isDirectory()) {
    await directory(w, path);
  } else {
    unsupported(path, stats);
  }
  await pause(w);
}

async function directory(w: Walk, path: Buffer): Promise<void> {
  const { writer } = w;
  const entries = readSortedDir(path);
  writer.directory();
  for (const d of entries) {
    writer.entry(d.name);
    const child = childPath(path, d.name);
    if (d.isFile()) {
      if (!(await listedFile(w, child))) await node(w, child, lstatSync(child));
      else await pause(w);
    } else if (d.isDirectory()) {
      await directory(w, child);
      await pause(w);
    } else if (d.isSymbolicLink()) {
      const target = listedSymlink(child);
      if (target) {
        writer.symlink(target);
        await pause(w);
      } else await node(w, child, lstatSync(child));
    } else {
      await node(w, child, lstatSync(child));
    }
  }
  writer.directoryEnd();
}

/** Stream backpressure, and a turn of the event loop every {@link YIELD_EVERY} entries. */
async function pause(w: Walk): Promise<void> {
  const wait = w.options.checkpoint?.();
  if (wait) await wait;
  if (++w.sinceYield >= YIELD_EVERY) {
    w.sinceYield = 0;
    await new Promise<void>((res) => setImmediate(res));
  }
}

export function newWalk(writer: NarWriter, options: WalkOptions): Walk {
  return { writer, options, small: undefined, sinceYield: 0 };
}

/** Writes the node at `path` (typed by lstat, a top-level symlink not followed), serially. */
export async function walkAt(w: Walk, path: Buffer, stats: Stats = lstatSync(path)): Promise<void> {
  await node(w, path, stats);
}

/** Serialises `fsPath` (not following a top-level symlink) into `writer`, then ends it. */
export async function walkNar(fsPath: string, writer: NarWriter, options: WalkOptions): Promise<void> {
  await walkAt(newWalk(writer, options), Buffer.from(fsPath));
  writer.end();
}
