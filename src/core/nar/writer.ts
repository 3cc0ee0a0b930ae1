/**
 * Encodes NAR events (or a {@link NarEntry} tree) into canonical NAR bytes. The writer checks
 * the event grammar, file sizes, entry names and the byte order of directory entries, so it
 * can only ever produce a NAR that real Nix would produce for the same tree.
 */
import { StrataError } from '../error.js';
import {
  compareNames,
  MAX_DEPTH,
  MAX_FILE_SIZE,
  NAR_MAGIC,
  type NarEntry,
  type NarEvent,
  nameProblem,
  paddingOf,
  quoteBytes,
  str,
  targetProblem,
  u64,
} from './format.js';

const MAGIC = str(NAR_MAGIC);
const OPEN = str('(');
const CLOSE = str(')');
const ZEROS = Buffer.alloc(8);
const REGULAR_HEAD = Buffer.concat([OPEN, str('type'), str('regular')]);
const EXECUTABLE = Buffer.concat([str('executable'), str('')]);
const CONTENTS = str('contents');
const SYMLINK_HEAD = Buffer.concat([OPEN, str('type'), str('symlink'), str('target')]);
const DIRECTORY_HEAD = Buffer.concat([OPEN, str('type'), str('directory')]);
const ENTRY_HEAD = Buffer.concat([str('entry'), OPEN, str('name')]);
const NODE = str('node');

/** Framing is gathered into buffers of this size: 64 KiB keeps per-chunk costs (hash updates, stream pushes) negligible for trees of tiny files. */
const DEFAULT_BATCH = 64 * 1024;
/** Contents chunks at least this big bypass the batch buffer and go out as they are (no copy). */
const PASS_THROUGH = 8 * 1024;

interface DirFrame {
  last: Uint8Array | undefined;
  entryOpen: boolean;
}

/**
 * Encodes a stream of {@link NarEvent}s into NAR bytes, handed to `out` in chunks. Small pieces
 * are batched; large file chunks are passed through without copying, so `out` receives the very
 * buffers given to {@link NarWriter.contents}. Batch buffers are never reused after `out` saw them,
 * unless `reuseBatch` says that `out` is done with each chunk when it returns (hashing).
 *
 * @example
 * ```ts
 * const chunks: Uint8Array[] = [];
 * const w = new NarWriter((c) => chunks.push(c));
 * w.regular(false, 2); w.contents(Buffer.from('hi')); w.regularEnd(); w.end();
 * ```
 */
export class NarWriter {
  readonly #out: (chunk: Uint8Array) => void;
  readonly #batchSize: number;
  readonly #reuseBatch: boolean;
  /** Allocated when the first byte after a flush arrives: a finished archive leaves none behind. */
  #batch: Buffer | undefined;
  #used = 0;
  #stack: DirFrame[] = [];
  #expectNode = true;
  #remaining = -1; // bytes still due for the open regular file; -1 when none is open
  #done = false;
  #written = 0;

  /**
   * `reuseBatch`: `out` never keeps a chunk past its return, so one batch buffer serves the whole
   * archive. Hashing a tree of small files flushes before every run of framed entries (~2,000
   * times for 100,000 files); a fresh 64 KiB buffer each time was page faults and GC for nothing.
   */
  constructor(out: (chunk: Uint8Array) => void, options: { batchSize?: number; reuseBatch?: boolean } = {}) {
    this.#out = out;
    this.#batchSize = options.batchSize ?? DEFAULT_BATCH;
    this.#reuseBatch = options.reuseBatch ?? false;
    this.#put(MAGIC);
  }

  /** Total bytes produced so far (flushed or still batched). */
  get bytesWritten(): number {
    return this.#written;
  }

  /** Writes one event; see {@link NarEvent} for the grammar. */
  write(ev: NarEvent): void {
    switch (ev.type) {
      case 'regular':
        return this.regular(ev.executable, ev.size);
      case 'contents':
        return this.contents(ev.chunk);
      case 'regularEnd':
        return this.regularEnd();
      case 'symlink':
        return this.symlink(ev.target);
      case 'directory':
        return this.directory();
      case 'entry':
        return this.entry(ev.name);
      case 'directoryEnd':
        return this.directoryEnd();
    }
  }

  /** Starts a regular file of `size` bytes; its contents must follow, then {@link regularEnd}. */
  regular(executable: boolean, size: number): void {
    this.#startNode('regular');
    if (!Number.isSafeInteger(size) || size < 0 || size > MAX_FILE_SIZE) this.#fail(`bad file size ${size}`);
    this.#put(REGULAR_HEAD);
    if (executable) this.#put(EXECUTABLE);
    this.#put(CONTENTS);
    this.#put(u64(size));
    this.#remaining = size;
  }

  /** Appends file contents to the open regular file. */
  contents(chunk: Uint8Array): void {
    if (this.#remaining < 0) this.#fail('contents outside a regular file');
    if (chunk.length > this.#remaining) this.#fail(`file contents exceed the declared size by ${chunk.length - this.#remaining} bytes`);
    this.#remaining -= chunk.length;
    if (chunk.length >= PASS_THROUGH) {
      this.flush();
      this.#written += chunk.length;
      this.#out(chunk);
    } else {
      this.#put(chunk);
    }
  }

  /** Ends the open regular file; all `size` bytes must have been written. */
  regularEnd(): void {
    if (this.#remaining !== 0) this.#fail(this.#remaining < 0 ? 'regularEnd outside a regular file' : `file contents are ${this.#remaining} bytes short`);
    this.#remaining = -1;
    // Everything before the contents is 8-aligned, so the total so far tells the padding.
    this.#put(ZEROS.subarray(0, paddingOf(this.#written)));
    this.#put(CLOSE);
    this.#endNode();
  }

  /** Writes a symlink node. */
  symlink(target: Uint8Array): void {
    this.#startNode('symlink');
    const problem = targetProblem(target);
    if (problem) this.#fail(problem);
    this.#put(SYMLINK_HEAD);
    this.#putStr(target);
    this.#put(CLOSE);
    this.#endNode();
  }

  /** Starts a directory; entries follow in strictly increasing byte order, then {@link directoryEnd}. */
  directory(): void {
    this.#startNode('directory');
    if (this.#stack.length >= MAX_DEPTH) this.#fail(`directories nested deeper than ${MAX_DEPTH}`);
    this.#put(DIRECTORY_HEAD);
    this.#stack.push({ last: undefined, entryOpen: false });
  }

  /** Starts an entry of the open directory; the child node's events follow. */
  entry(name: Uint8Array): void {
    const top = this.#stack.at(-1);
    if (!top || this.#expectNode || this.#remaining >= 0 || top.entryOpen) this.#fail('entry outside a directory');
    const problem = nameProblem(name);
    if (problem) this.#fail(problem);
    if (top.last !== undefined) {
      const order = compareNames(top.last, name);
      if (order === 0) this.#fail(`duplicate entry ${quoteBytes(name)}`);
      if (order > 0) this.#fail(`entry ${quoteBytes(name)} is not sorted after ${quoteBytes(top.last)}`);
    }
    top.last = Buffer.from(name);
    top.entryOpen = true;
    this.#put(ENTRY_HEAD);
    this.#putStr(name);
    this.#put(NODE);
    this.#expectNode = true;
  }

  /**
   * Appends complete entries of the open directory that the caller has already framed (the
   * hashing fast path: a helper thread frames whole runs of small files). `first` and `last`
   * are the run's first and last names, checked against the entry order; `bytes` must be whole
   * 8-byte units, as every framed entry is.
   */
  framedEntries(bytes: Uint8Array, first: Uint8Array, last: Uint8Array): void {
    const top = this.#stack.at(-1);
    if (!top || this.#expectNode || this.#remaining >= 0 || top.entryOpen) this.#fail('entry outside a directory');
    if (bytes.length % 8 !== 0) this.#fail(`framed entries of ${bytes.length} bytes, not a multiple of 8`);
    if (top.last !== undefined && compareNames(top.last, first) >= 0) this.#fail(`entry ${quoteBytes(first)} is not sorted after ${quoteBytes(top.last)}`);
    if (compareNames(first, last) > 0) this.#fail(`entry ${quoteBytes(last)} is not sorted after ${quoteBytes(first)}`);
    top.last = Buffer.from(last);
    this.flush();
    this.#written += bytes.length;
    this.#out(bytes);
  }

  /** Ends the open directory. */
  directoryEnd(): void {
    const top = this.#stack.at(-1);
    if (!top || this.#expectNode || top.entryOpen || this.#remaining >= 0) this.#fail('directoryEnd outside a directory');
    this.#stack.pop();
    this.#put(CLOSE);
    this.#endNode();
  }

  /** Checks that the archive is complete and flushes the last bytes. */
  end(): void {
    if (!this.#done) this.#fail('the archive is incomplete');
    this.flush();
  }

  /** Hands batched bytes to `out` now. */
  flush(): void {
    if (this.#used === 0) return;
    const chunk = this.#batch!.subarray(0, this.#used);
    if (!this.#reuseBatch) this.#batch = undefined;
    this.#used = 0;
    this.#out(chunk);
  }

  #startNode(kind: string): void {
    if (!this.#expectNode || this.#done) this.#fail(`unexpected ${kind} node`);
    this.#expectNode = false;
  }

  #endNode(): void {
    const top = this.#stack.at(-1);
    if (top === undefined) {
      this.#done = true;
    } else if (top.entryOpen) {
      top.entryOpen = false;
      this.#put(CLOSE);
    }
  }

  #putStr(bytes: Uint8Array): void {
    this.#put(u64(bytes.length));
    this.#put(bytes);
    this.#put(ZEROS.subarray(0, paddingOf(bytes.length)));
  }

  #put(bytes: Uint8Array): void {
    this.#written += bytes.length;
    let from = 0;
    while (from < bytes.length) {
      const n = Math.min(bytes.length - from, this.#batchSize - this.#used);
      (this.#batch ??= Buffer.allocUnsafe(this.#batchSize)).set(bytes.subarray(from, from + n), this.#used);
      this.#used += n;
      from += n;
      if (this.#used === this.#batchSize) this.flush();
    }
  }

  #fail(what: string): never {
    throw new StrataError('NAR_INVALID', `Cannot write NAR: ${what} at byte ${this.#written}`);
  }
}

/**
 * Encodes a {@link NarEntry} tree as NAR chunks. Directory entries are sorted here (by raw
 * bytes), so they may be given in any order; duplicates and bad names are rejected.
 *
 * @example
 * ```ts
 * for await (const chunk of encodeNar({ type: 'symlink', target: Buffer.from('x') })) process.stdout.write(chunk);
 * ```
 */
export async function* encodeNar(entry: NarEntry): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array[] = [];
  const writer = new NarWriter((c) => void pending.push(c));
  async function* node(e: NarEntry): AsyncGenerator<Uint8Array> {
    switch (e.type) {
      case 'symlink':
        writer.symlink(e.target);
        break;
      case 'regular':
        writer.regular(e.executable, e.size);
        for await (const chunk of e.contents) {
          writer.contents(chunk);
          yield* drain();
        }
        writer.regularEnd();
        break;
      case 'directory': {
        const entries = [...e.entries].sort((a, b) => compareNames(a[0], b[0]));
        writer.directory();
        for (const [name, child] of entries) {
          writer.entry(name);
          yield* node(child);
        }
        writer.directoryEnd();
        break;
      }
    }
    yield* drain();
  }
  function* drain(): Generator<Uint8Array> {
    const out = pending;
    pending = [];
    yield* out;
  }
  yield* node(entry);
  writer.end();
  yield* drain();
}
