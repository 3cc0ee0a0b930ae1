/**
 * Internal: walks a file system object and feeds it to a {@link NarWriter}. Shared by
 * `dumpPath` (stream out) and `hashPath` (hash in place).
 *
 * Two regimes, chosen by measurement on a 2-core VM (bench/nar-hash.ts):
 * - Metadata, directories and small files (≤ 64 KiB) use synchronous calls. A tree of 100,000
 *   small files needs ~400,000 syscalls whatever we do (Nix makes the same ones); through the
 *   libuv pool each costs a thread hand-off, which made the walk 6× slower than Nix (8.7 s vs
 *   1.4 s), while synchronous calls cost what they cost Nix. To keep the event loop responsive
 *   the walk yields to it every 256 entries (a few ms).
 * - Big files are read asynchronously in 1 MiB chunks, and the read of chunk n+1 is in flight
 *   while chunk n is hashed or pushed (double buffering), so I/O and hashing overlap.
 */
import { closeSync, constants as C, lstatSync, openSync, read, readdirSync, readlinkSync, readSync, type Stats, close, open } from 'node:fs';

import { StrataError } from '../core/error.js';
import { compareNames } from '../core/nar/format.js';
import type { NarWriter } from '../core/nar/writer.js';

/** Read size for big files: 1 MiB amortises syscall and hash-call overhead. */
export const CHUNK_SIZE = 1024 * 1024;
/** Files up to this size are read whole with one synchronous read. */
const SMALL_FILE = 64 * 1024;
/** Entries between two yields to the event loop. */
const YIELD_EVERY = 256;
const SLASH = Buffer.from('/');
const OPEN_FLAGS = C.O_RDONLY | C.O_NOFOLLOW;

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

/** Walk state shared by every node: the reusable small-file buffer and the yield counter. */
interface Walk {
  writer: NarWriter;
  options: WalkOptions;
  small: Buffer;
  sinceYield: number;
}

/** Reads a small file whole, synchronously. */
function readSmall(w: Walk, path: Buffer, size: number): Buffer {
  const fd = openSync(path, OPEN_FLAGS);
  try {
    // A retained chunk (dumpPath) needs its own buffer; a hashed one can share.
    const buf = w.options.reuseBuffers ? w.small : Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      const n = readSync(fd, buf, got, size - got, got);
      if (n === 0) changed(path);
      got += n;
    }
    return buf.subarray(0, size);
  } finally {
    closeSync(fd);
  }
}

/** Streams a big file: the read of chunk n+1 runs while chunk n is hashed or pushed. */
async function streamFile(path: Buffer, size: number, writer: NarWriter, options: WalkOptions): Promise<void> {
  const fd = await openP(path);
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
    let pending = next(0);
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
    await closeP(fd);
  }
}

async function node(w: Walk, path: Buffer, stats: Stats): Promise<void> {
  const { writer, options } = w;
  if (stats.isSymbolicLink()) {
    writer.symlink(readlinkSync(path, { encoding: 'buffer' }));
  } else if (stats.isFile()) {
    // Nix writes the executable marker iff the owner-execute bit is set.
    writer.regular((stats.mode & 0o100) !== 0, stats.size);
    if (stats.size > SMALL_FILE) await streamFile(path, stats.size, writer, options);
    else if (stats.size > 0) writer.contents(readSmall(w, path, stats.size));
    writer.regularEnd();
  } else if (stats.isDirectory()) {
    const names = readdirSync(path, { encoding: 'buffer' }).sort(compareNames);
    writer.directory();
    const base = Buffer.concat([path, SLASH]);
    for (const name of names) {
      writer.entry(name);
      const child = Buffer.concat([base, name]);
      await node(w, child, lstatSync(child));
    }
    writer.directoryEnd();
  } else {
    const kind = stats.isSocket() ? 'a socket' : stats.isFIFO() ? 'a FIFO' : stats.isCharacterDevice() ? 'a character device' : stats.isBlockDevice() ? 'a block device' : 'of an unknown type';
    throw new StrataError('FILE_TYPE_UNSUPPORTED', `Cannot dump '${path.toString()}': it is ${kind}`, { value: path.toString() });
  }
  const wait = options.checkpoint?.();
  if (wait) await wait;
  if (++w.sinceYield >= YIELD_EVERY) {
    w.sinceYield = 0;
    await new Promise<void>((res) => setImmediate(res));
  }
}

/** Serialises `fsPath` (not following a top-level symlink) into `writer`, then ends it. */
export async function walkNar(fsPath: string, writer: NarWriter, options: WalkOptions): Promise<void> {
  const path = Buffer.from(fsPath);
  const walk: Walk = { writer, options, small: Buffer.allocUnsafe(SMALL_FILE), sinceYield: 0 };
  await node(walk, path, lstatSync(path));
  writer.end();
}
