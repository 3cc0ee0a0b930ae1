/**
 * Reading a `nix-store --export` stream: for each path `u64 1`, its NAR, `u64 0x4558494e`
 * ("NIXE"), the store path, its references (a count, then each), its deriver (`""` for none) and
 * `u64 0`, or `u64 1` and a legacy signature (ignored, as Nix 2.8 ignores it); `u64 0` after the
 * last path. Integers are little-endian; strings are Nix `str()`s (length, bytes, zero padding).
 *
 * The NAR comes before the path it belongs to, and it is not length-prefixed: its bytes go to a
 * {@link NarSink} as they are read, and the sink, which parses them, says where the NAR ends. A
 * local store restores them straight into its staging dir (Nix 2.8 reads each NAR into memory
 * first), so each NAR is parsed once, by the strict parser of the restore; {@link collectNar}
 * keeps a NAR in memory up to {@link SPILL_BYTES} and in a temporary file beyond, for stores that
 * take NARs whole. Either way memory does not grow with the size of a path.
 */
import { createHash, type Hash as Hasher } from 'node:crypto';
import { closeSync, createReadStream, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { StrataError } from '../core/error.js';
import { Hash } from '../core/hash.js';
import { paddingOf, u64At } from '../core/nar/format.js';
import { type NarHandler, NarParser } from '../core/nar/parser.js';
import type { StoreDir, StorePath } from '../core/store-path.js';
import type { NarSource, PathInfo, Store } from './store.js';

const EXPORT_MAGIC = 0x4558494e;
/** A NAR larger than this is written to a temporary file as it arrives. */
export const SPILL_BYTES = 16 * 1024 * 1024;
/** Longest string of the metadata we read whole (a store path is at most 211 bytes + the dir). */
const MAX_META_STRING = 4096;
/** More references than any real path has (the largest closures have a few thousand). */
const MAX_REFERENCES = 1 << 20;

function invalid(what: string, at: number): never {
  throw new StrataError('EXPORT_INVALID', `Cannot import: ${what} at byte ${at} of the export stream`, { hint: "the input must be what 'nix-store --export' writes" });
}

/** Pulls exact byte counts out of a chunked source. */
class Reader {
  private chunk: Uint8Array = new Uint8Array(0);
  private pos = 0;
  /** Bytes consumed so far (for error messages). */
  offset = 0;

  constructor(private readonly source: AsyncIterator<Uint8Array>) {}

  /** Fills the current chunk when it is used up; false at the end of the input. */
  private async more(): Promise<boolean> {
    while (this.pos === this.chunk.length) {
      const r = await this.source.next();
      if (r.done) return false;
      this.chunk = r.value;
      this.pos = 0;
    }
    return true;
  }

  /** Passes the next `n` bytes to `sink`, as views of the input chunks. */
  async take(n: number, sink: (piece: Uint8Array) => void): Promise<void> {
    while (n > 0) {
      if (!(await this.more())) invalid('unexpected end of input', this.offset);
      const k = Math.min(n, this.chunk.length - this.pos);
      sink(this.chunk.subarray(this.pos, this.pos + k));
      this.pos += k;
      this.offset += k;
      n -= k;
    }
  }

  /** The next `n` bytes (small `n`), copied. */
  async bytes(n: number): Promise<Buffer> {
    if (this.chunk.length - this.pos >= n) {
      const b = Buffer.from(this.chunk.subarray(this.pos, this.pos + n));
      this.pos += n;
      this.offset += n;
      return b;
    }
    const out = Buffer.alloc(n);
    let at = 0;
    await this.take(n, (p) => {
      out.set(p, at);
      at += p.length;
    });
    return out;
  }

  /**
   * Passes the unread bytes to `sink`, chunk after chunk, until it takes fewer than it was given
   * or says it is done: the bytes it took are consumed, the rest stays for the next read.
   */
  async feed(sink: Pick<NarSink<unknown>, 'write' | 'done' | 'ready'>): Promise<void> {
    for (;;) {
      const full = sink.ready?.();
      if (full) await full;
      if (!(await this.more())) invalid('unexpected end of input', this.offset);
      const rest = this.chunk.length - this.pos;
      const k = sink.write(this.pos === 0 ? this.chunk : this.chunk.subarray(this.pos));
      this.pos += k;
      this.offset += k;
      if (k < rest || sink.done) return;
    }
  }

  async u64(): Promise<number> {
    const at = this.offset;
    const n = u64At(await this.bytes(8), 0);
    if (n === undefined) invalid('a number larger than 2^53', at);
    return n;
  }

  /** A `str()` of at most `max` bytes. */
  async str(max: number, what: string): Promise<Buffer> {
    const at = this.offset;
    const n = await this.u64();
    if (n > max) invalid(`${what} of ${n} bytes (at most ${max})`, at);
    const b = await this.bytes(n + paddingOf(n));
    return b.subarray(0, n);
  }

  async atEnd(): Promise<boolean> {
    return !(await this.more());
  }
}

/**
 * Where one NAR's bytes go as they are read; `T` is what it makes of them. It parses them, so it
 * knows where the NAR ends: `write` returns how many bytes of the piece belong to the NAR (all of
 * them until it ends), and `done` says it ended.
 */
export interface NarSink<T> {
  write(piece: Uint8Array): number;
  readonly done: boolean;
  end(): T;
  /** Called instead of `end` when reading fails; returns the error to throw. */
  fail(e: unknown): unknown;
  /** A wait before the next piece while the sink has too much in hand; undefined when it has not. */
  ready?(): Promise<void> | undefined;
}

/** A NAR kept whole: in memory, or in a file past {@link SPILL_BYTES}, with its hash and size. */
export interface CollectedNar {
  narHash: Hash;
  narSize: number;
  nar: () => Uint8Array | Readable;
  spillFile?: string;
}

/** Parses without acting: a NAR's end is found, and its faults refused, before a store sees it. */
const IGNORE: NarHandler = {
  regular() {},
  contents() {},
  regularEnd() {},
  symlink() {},
  directory() {},
  entry() {},
  directoryEnd() {},
};

/**
 * A {@link NarSink} keeping the NAR: views of the input chunks in memory (a NAR within one chunk,
 * as most are, is not copied), spilled to `spillPath()` past {@link SPILL_BYTES}.
 */
export function collectNar(spillPath: () => string, spillBytes = SPILL_BYTES): NarSink<CollectedNar> {
  const parser = new NarParser();
  let pieces: Uint8Array[] = [];
  let size = 0;
  let fd = -1;
  let file: string | undefined;
  let hasher: Hasher | undefined;
  const write = (p: Uint8Array): void => {
    hasher!.update(p);
    for (let off = 0; off < p.length; ) off += writeSync(fd, p, off, p.length - off);
  };
  return {
    write(input) {
      const used = parser.parse(input, IGNORE);
      const piece = used === input.length ? input : input.subarray(0, used);
      size += piece.length;
      if (fd >= 0) {
        write(piece);
        return used;
      }
      pieces.push(piece);
      if (size <= spillBytes) return used;
      file = spillPath();
      fd = openSync(file, 'wx', 0o600);
      hasher = createHash('sha256');
      for (const p of pieces) write(p);
      pieces = [];
      return used;
    },
    get done() {
      return parser.done;
    },
    end() {
      parser.end();
      if (fd >= 0) {
        closeSync(fd);
        fd = -1;
        const f = file!;
        return { narHash: new Hash('sha256', hasher!.digest()), narSize: size, nar: () => createReadStream(f), spillFile: f };
      }
      const bytes = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, size);
      pieces = [];
      return { narHash: Hash.of('sha256', bytes), narSize: size, nar: () => bytes };
    },
    fail(e) {
      if (fd >= 0) closeSync(fd);
      fd = -1;
      return e;
    },
  };
}

/** One path of an export stream: its metadata and what its sink made of its NAR. */
export interface ExportedPath<T> {
  path: StorePath;
  references: StorePath[];
  deriver?: StorePath;
  nar: T;
}

/**
 * The paths of an export stream, in stream order (Nix exports references first). Each NAR goes
 * to a sink from `openSink` as it is read; the next path is read only when the consumer asks.
 * Nothing here keeps a view of a source chunk once the next is requested: a sink that keeps
 * nothing either (a restore) may be fed by a source that reuses one buffer for every chunk.
 * Bytes after the final `u64 0` are refused (Nix 2.8 ignores them) when the consumer asks for
 * the path after the last, so a consumer publishing in batches publishes none of its last batch.
 */
export async function* readExport<T>(source: AsyncIterable<Uint8Array>, storeDir: StoreDir, openSink: () => NarSink<T>): AsyncGenerator<ExportedPath<T>> {
  const r = new Reader(source[Symbol.asyncIterator]());
  for (;;) {
    const at = r.offset;
    const more = await r.u64();
    if (more === 0) break;
    if (more !== 1) invalid(`expected 0 or 1 before a path, found ${more}`, at);
    const sink = openSink();
    let nar: T;
    try {
      await r.feed(sink);
      nar = sink.end();
    } catch (e) {
      throw sink.fail(e);
    }
    const magicAt = r.offset;
    if ((await r.u64()) !== EXPORT_MAGIC) invalid('missing export magic after a NAR', magicAt);
    const pathAt = r.offset;
    const path = parsePath(storeDir, await r.str(MAX_META_STRING, 'store path'), pathAt);
    const count = await r.u64();
    if (count > MAX_REFERENCES) invalid(`${count} references`, r.offset - 8);
    const references: StorePath[] = [];
    for (let i = 0; i < count; i++) {
      const refAt = r.offset;
      references.push(parsePath(storeDir, await r.str(MAX_META_STRING, 'reference'), refAt));
    }
    const deriverAt = r.offset;
    const deriverText = await r.str(MAX_META_STRING, 'deriver');
    const deriver = deriverText.length > 0 ? parsePath(storeDir, deriverText, deriverAt) : undefined;
    const sigAt = r.offset;
    const sig = await r.u64();
    if (sig === 1) await r.str(MAX_META_STRING, 'legacy signature');
    else if (sig !== 0) invalid(`expected 0 or 1 for the legacy signature, found ${sig}`, sigAt);
    yield { path, references, ...(deriver ? { deriver } : {}), nar };
  }
  if (!(await r.atEnd())) invalid('trailing bytes after the last path', r.offset);
}

/** The path info an export gives a path: its NAR's hash and size as read (an export declares none). */
export function exportedInfo(e: ExportedPath<unknown>, narHash: Hash, narSize: number): PathInfo {
  return { path: e.path, narHash, narSize, references: e.references, ...(e.deriver ? { deriver: e.deriver } : {}), ultimate: false, sigs: [] };
}

function parsePath(storeDir: StoreDir, bytes: Buffer, at: number): StorePath {
  const text = bytes.toString('utf8');
  try {
    return storeDir.parse(text);
  } catch (e) {
    throw new StrataError('EXPORT_INVALID', `Cannot import: '${text}' at byte ${at} of the export stream is not a store path in '${storeDir.path}'`, { value: text, cause: e });
  }
}

/** A batch ends at this many bytes of NAR held in memory (a spilled NAR counts nothing): each batch costs a sync and a transaction, so large, but bounded. */
export const BATCH_BYTES = 128 * 1024 * 1024;
/** …or at this many paths (each holds a lock file open while its batch is published); also the batches of `LocalStore.addFromExport`. */
export const BATCH_PATHS = 2000;

/**
 * Adds every path of an export stream to a store that takes whole NARs, as `nix-store
 * --import`: in batches (one durability step and one transaction each, through `addFromNars`
 * when the store has it), in stream order, so a path's references are valid or in its batch.
 * `onAdded` gets each batch's paths once they are valid (already valid ones included). Memory
 * stays under {@link BATCH_BYTES} plus one input chunk; spilled NARs go to a temporary directory
 * removed at the end. A local store restores as it reads instead (`LocalStore.addFromExport`).
 */
export async function importExport(
  store: Pick<Store, 'storeDir' | 'addFromNar' | 'addFromNars'>,
  source: AsyncIterable<Uint8Array>,
  onAdded: (paths: StorePath[]) => void = () => {},
  spillBytes = SPILL_BYTES,
): Promise<StorePath[]> {
  const spillDir = mkdtempSync(join(tmpdir(), 'strata-import-'));
  let spilled = 0;
  const all: StorePath[] = [];
  let batch: Array<NarSource & { spillFile?: string }> = [];
  let held = 0;
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const items = batch;
    batch = [];
    held = 0;
    if (store.addFromNars) await store.addFromNars(items);
    else
      for (const { info, nar } of items) {
        const n = await nar();
        await store.addFromNar(info, n instanceof Uint8Array ? Readable.from([n]) : n);
      }
    for (const i of items) if (i.spillFile !== undefined) rmSync(i.spillFile, { force: true });
    const paths = items.map((i) => i.info.path);
    all.push(...paths);
    onAdded(paths);
  };
  try {
    for await (const e of readExport(source, store.storeDir, () => collectNar(() => join(spillDir, `nar-${spilled++}`), spillBytes))) {
      const { narHash, narSize, nar, spillFile } = e.nar;
      batch.push({ info: exportedInfo(e, narHash, narSize), nar, ...(spillFile !== undefined ? { spillFile } : {}) });
      if (spillFile === undefined) held += narSize;
      if (held >= BATCH_BYTES || batch.length >= BATCH_PATHS) await flush();
    }
    await flush();
    return all;
  } finally {
    rmSync(spillDir, { recursive: true, force: true });
  }
}
