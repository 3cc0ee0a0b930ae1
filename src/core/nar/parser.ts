/**
 * A streaming, incremental, strict NAR parser. Feed it chunks of any size; it yields
 * {@link NarEvent}s as soon as they are complete, and file contents as views into the fed
 * chunks, so memory stays flat whatever the file sizes.
 *
 * It accepts exactly the canonical NARs that {@link NarWriter} produces and rejects everything
 * else: everything `nix-store --restore` 2.8 rejects (bad magic, truncation, non-zero padding,
 * bad names, a non-empty executable marker, unknown tags, duplicates) and, on purpose, more:
 * unsorted entries, bytes after the root node, names over 255 bytes, symlink targets that are
 * empty, contain NUL or exceed 4095 bytes, lengths over 2^53 - 1, nesting deeper than 256, and
 * non-canonical field order. Every error is a `NAR_INVALID` {@link StrataError} whose one-line
 * message names the problem and the byte offset where it starts.
 */
import { StrataError } from '../error.js';
import {
  compareNames,
  MAX_DEPTH,
  MAX_FILE_SIZE,
  MAX_NAME_LENGTH,
  MAX_TAG_LENGTH,
  MAX_TARGET_LENGTH,
  NAR_MAGIC,
  type NarEvent,
  nameProblem,
  paddingOf,
  quoteBytes,
  str,
  targetProblem,
  u64At,
} from './format.js';

/** What the grammar coroutine asks the driver for. */
type Op =
  | { readonly kind: 'read'; readonly n: number } // exactly n contiguous bytes
  | { readonly kind: 'stream'; readonly n: number } // n bytes passed on as `contents` events
  | { readonly kind: 'event'; readonly ev: NarEvent };

type Grammar<T> = Generator<Op, T, Uint8Array | undefined>;

interface Cursor {
  offset: number;
}

const MAGIC = str(NAR_MAGIC);

/** Big enough for the largest string we ever read whole: a 4095-byte target plus its padding. */
const HOLD_SIZE = MAX_TARGET_LENGTH + 1;

function fail(what: string, at: number): never {
  throw new StrataError('NAR_INVALID', `Cannot parse NAR: ${what} at byte ${at}`);
}

function* readBytes(n: number): Grammar<Uint8Array> {
  const b = yield { kind: 'read', n };
  return b!;
}

function* readLength(c: Cursor, max: number, what: string): Grammar<number> {
  const at = c.offset;
  return lengthOf(yield* readBytes(8), max, what, at);
}

/** The u64 in the 8 bytes `b`, at most `max`. */
function lengthOf(b: Uint8Array, max: number, what: string, at: number): number {
  const n = u64At(b, 0);
  if (n === undefined || n > max) fail(`${what} length ${Buffer.from(b.buffer, b.byteOffset, 8).readBigUInt64LE(0)} exceeds ${max}`, at);
  return n;
}

function checkPadding(b: Uint8Array, from: number, at: number): void {
  for (let i = from; i < b.length; i++) if (b[i] !== 0) fail('non-zero padding', at + i);
}

/** Reads one `str()` whose payload is at most `max` bytes; returns a view (copy it to keep it). */
function* readStr(c: Cursor, max: number, what: string): Grammar<Uint8Array> {
  const n = yield* readLength(c, max, what);
  if (n === 0) return new Uint8Array(0);
  const at = c.offset;
  const b = yield* readBytes(n + paddingOf(n));
  checkPadding(b, n, at);
  return b.subarray(0, n);
}

/**
 * {@link readStr} of a tag, written out in one generator: tags are most of a NAR's reads, and
 * each level of `yield*` (readStr, readLength, readBytes) is resumed on every read.
 */
function* readTag(c: Cursor): Grammar<{ tag: string; at: number }> {
  const at = c.offset;
  const n = lengthOf((yield { kind: 'read', n: 8 })!, MAX_TAG_LENGTH, 'tag', at);
  if (n === 0) return { tag: '', at };
  const bodyAt = c.offset;
  const b = (yield { kind: 'read', n: n + paddingOf(n) })!;
  checkPadding(b, n, bodyAt);
  // At most 16 bytes: decoded directly, without copying them into a Buffer first.
  let tag = '';
  for (let i = 0; i < n; i++) tag += String.fromCharCode(b[i]!);
  return { tag, at };
}

function* expectTag(c: Cursor, expected: string): Grammar<void> {
  const { tag, at } = yield* readTag(c);
  if (tag !== expected) fail(`expected '${expected}' but found ${quoteBytes(Buffer.from(tag, 'latin1'))}`, at);
}

function* node(c: Cursor, depth: number): Grammar<void> {
  yield* expectTag(c, '(');
  yield* expectTag(c, 'type');
  const { tag: type, at: typeAt } = yield* readTag(c);
  switch (type) {
    case 'regular': {
      let { tag, at } = yield* readTag(c);
      let executable = false;
      if (tag === 'executable') {
        const markerAt = c.offset;
        const markerLength = yield* readLength(c, MAX_FILE_SIZE, 'executable marker');
        if (markerLength !== 0) fail('executable marker has a non-empty value', markerAt);
        executable = true;
        ({ tag, at } = yield* readTag(c));
      }
      if (tag !== 'contents') fail(`expected 'contents' but found ${quoteBytes(Buffer.from(tag, 'latin1'))}`, at);
      const size = yield* readLength(c, MAX_FILE_SIZE, 'file');
      yield { kind: 'event', ev: { type: 'regular', executable, size } };
      yield { kind: 'stream', n: size };
      const pad = paddingOf(size);
      if (pad > 0) {
        const padAt = c.offset;
        checkPadding(yield* readBytes(pad), 0, padAt);
      }
      yield* expectTag(c, ')');
      yield { kind: 'event', ev: { type: 'regularEnd' } };
      return;
    }
    case 'symlink': {
      yield* expectTag(c, 'target');
      const at = c.offset;
      const target = Buffer.from(yield* readStr(c, MAX_TARGET_LENGTH, 'symlink target'));
      const problem = targetProblem(target);
      if (problem) fail(problem, at);
      yield* expectTag(c, ')');
      yield { kind: 'event', ev: { type: 'symlink', target } };
      return;
    }
    case 'directory': {
      if (depth >= MAX_DEPTH) fail(`directories nested deeper than ${MAX_DEPTH}`, typeAt);
      yield { kind: 'event', ev: { type: 'directory' } };
      let last: Buffer | undefined;
      for (;;) {
        const { tag, at } = yield* readTag(c);
        if (tag === ')') break;
        if (tag !== 'entry') fail(`expected 'entry' or ')' but found ${quoteBytes(Buffer.from(tag, 'latin1'))}`, at);
        yield* expectTag(c, '(');
        yield* expectTag(c, 'name');
        const nameAt = c.offset;
        const name = Buffer.from(yield* readStr(c, MAX_NAME_LENGTH, 'name'));
        const problem = nameProblem(name);
        if (problem) fail(`invalid entry: ${problem}`, nameAt);
        if (last !== undefined) {
          const order = compareNames(last, name);
          if (order === 0) fail(`duplicate entry ${quoteBytes(name)}`, nameAt);
          if (order > 0) fail(`entry ${quoteBytes(name)} is not sorted after ${quoteBytes(last)}`, nameAt);
        }
        last = name;
        yield* expectTag(c, 'node');
        yield { kind: 'event', ev: { type: 'entry', name } };
        yield* node(c, depth + 1);
        yield* expectTag(c, ')');
      }
      yield { kind: 'event', ev: { type: 'directoryEnd' } };
      return;
    }
    default:
      fail(`unknown node type ${quoteBytes(Buffer.from(type, 'latin1'))}`, typeAt);
  }
}

function* archive(c: Cursor): Grammar<void> {
  // Compared as one 24-byte string, so anything but the exact magic is "not a NAR".
  const magic = yield* readBytes(MAGIC.length);
  if (!MAGIC.equals(magic)) fail("bad magic, this is not a NAR (expected 'nix-archive-1')", 0);
  yield* node(c, 0);
}

/**
 * The incremental parser. Call {@link NarParser.feed} with each chunk and consume the events
 * it yields (fully, before feeding the next chunk), then {@link NarParser.end}.
 *
 * @example
 * ```ts
 * const p = new NarParser();
 * for await (const chunk of stream) for (const ev of p.feed(chunk)) handle(ev);
 * p.end(); // throws NAR_INVALID if the archive is incomplete
 * ```
 */
export class NarParser {
  readonly #cursor: Cursor = { offset: 0 };
  readonly #grammar: Grammar<void>;
  #op: Op | undefined; // undefined once the root node is complete
  #streamed = 0; // bytes of the current `stream` op already passed on
  /** Made on the first read that straddles two chunks: a NAR fed whole (most, in an import) never needs it. */
  #hold: Buffer | undefined;
  #held = 0;
  #failed: unknown;

  constructor() {
    this.#grammar = archive(this.#cursor);
    this.#advance(undefined);
  }

  /** Bytes consumed so far. */
  get offset(): number {
    return this.#cursor.offset;
  }

  /** True once the root node is complete. */
  get done(): boolean {
    return this.#op === undefined;
  }

  /**
   * Parses `chunk` and yields the events it completes. `contents` events are views into
   * `chunk`. Throws `NAR_INVALID` on the first fault, after which the parser is unusable.
   */
  *feed(chunk: Uint8Array): Generator<NarEvent, void, undefined> {
    if (this.#failed !== undefined) throw this.#failed;
    let pos = 0;
    try {
      for (;;) {
        const op = this.#op;
        if (op === undefined) {
          if (pos < chunk.length) fail(`${chunk.length - pos} trailing bytes after the archive`, this.#cursor.offset);
          return;
        }
        if (op.kind === 'event') {
          this.#advance(undefined);
          yield op.ev;
          continue;
        }
        if (op.kind === 'stream' && this.#streamed === op.n) {
          this.#streamed = 0;
          this.#advance(undefined);
          continue;
        }
        if (pos === chunk.length) return;
        if (op.kind === 'stream') {
          const n = Math.min(op.n - this.#streamed, chunk.length - pos);
          const piece = chunk.subarray(pos, pos + n);
          pos += n;
          this.#streamed += n;
          this.#cursor.offset += n;
          yield { type: 'contents', chunk: piece };
          continue;
        }
        // A read: zero-copy when the chunk holds it all, else gather into the hold buffer.
        if (this.#held === 0 && chunk.length - pos >= op.n) {
          const bytes = chunk.subarray(pos, pos + op.n);
          pos += op.n;
          this.#cursor.offset += op.n;
          this.#advance(bytes);
          continue;
        }
        const n = Math.min(op.n - this.#held, chunk.length - pos);
        this.#hold ??= Buffer.alloc(HOLD_SIZE);
        this.#hold.set(chunk.subarray(pos, pos + n), this.#held);
        this.#held += n;
        pos += n;
        if (this.#held < op.n) return;
        this.#held = 0;
        this.#cursor.offset += op.n;
        this.#advance(this.#hold!.subarray(0, op.n));
      }
    } catch (e) {
      this.#failed = e;
      throw e;
    }
  }

  /** Declares the end of input; throws `NAR_INVALID` unless the archive is complete. */
  end(): void {
    if (this.#failed !== undefined) throw this.#failed;
    if (this.#op !== undefined) {
      this.#failed = new StrataError('NAR_INVALID', `Cannot parse NAR: unexpected end of archive at byte ${this.#cursor.offset + this.#held}`);
      throw this.#failed;
    }
  }

  #advance(input: Uint8Array | undefined): void {
    const r = this.#grammar.next(input);
    this.#op = r.done ? undefined : r.value;
  }
}

/**
 * Receives parsed events; may be async (the parser waits, which gives backpressure).
 */
export type NarSink = (ev: NarEvent) => void | Promise<void>;

/**
 * Parses a whole NAR from a byte source, awaiting `sink` for each event.
 *
 * @example
 * ```ts
 * await parseNar(fs.createReadStream('x.nar'), (ev) => console.log(ev.type));
 * ```
 */
export async function parseNar(source: Iterable<Uint8Array> | AsyncIterable<Uint8Array>, sink: NarSink): Promise<void> {
  const parser = new NarParser();
  for await (const chunk of source) {
    for (const ev of parser.feed(chunk)) {
      const r = sink(ev);
      if (r !== undefined) await r;
    }
  }
  parser.end();
}
