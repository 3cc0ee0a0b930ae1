/**
 * A streaming, incremental, strict NAR parser. Feed it chunks of any size; it calls a
 * {@link NarHandler} as each step of the archive is complete, with file contents as ranges of the
 * fed chunks, so memory stays flat whatever the file sizes.
 *
 * It accepts exactly the canonical NARs that {@link NarWriter} produces and rejects everything
 * else: everything `nix-store --restore` 2.8 rejects (bad magic, truncation, non-zero padding,
 * bad names, a non-empty executable marker, unknown tags, duplicates) and, on purpose, more:
 * unsorted entries, bytes after the root node, names over 255 bytes, symlink targets that are
 * empty, contain NUL or exceed 4095 bytes, lengths over 2^53 - 1, nesting deeper than 256, and
 * non-canonical field order. Every error is a `NAR_INVALID` {@link StrataError} whose one-line
 * message names the problem and the byte offset where it starts.
 *
 * A NAR is a sequence of `str()` tokens, so the parser is a state machine over tokens: read a
 * token's 8-byte length, then its body, then act on it according to where in the grammar it is.
 * No generators, no object per token: a store import parses every byte of every path, and the
 * generator-based parser this replaces spent more time resuming coroutines than reading bytes.
 */
import { StrataError } from '../error.js';
import {
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
  targetProblem,
  u64At,
} from './format.js';

/**
 * What the parser calls, in archive order (the grammar of {@link NarEvent}). Byte ranges
 * (`bytes[start..end)`) are valid only during the call: copy what you keep.
 */
export interface NarHandler {
  regular(executable: boolean, size: number): void;
  /** A piece of the current file; the pieces add up to its size. */
  contents(bytes: Uint8Array, start: number, end: number): void;
  regularEnd(): void;
  symlink(bytes: Uint8Array, start: number, end: number): void;
  directory(): void;
  /** The name of the next node, which follows as its own events. */
  entry(bytes: Uint8Array, start: number, end: number): void;
  directoryEnd(): void;
}

// Where in the grammar the next token belongs (plain numbers: a `const enum` is not safe to bundle).
const MAGIC = 0; // "nix-archive-1"
const OPEN = 1; // "(" of a node
const TYPE_KEY = 2; // "type"
const TYPE = 3; // "regular" | "symlink" | "directory"
const REGULAR_FIELD = 4; // "executable" | "contents"
const EXECUTABLE_MARKER = 5; // ""
const CONTENTS_KEY = 6; // "contents" after the executable marker
const CONTENTS = 7; // the file's bytes: the length is read, the body streamed
const STREAM = 8; // passing the file's bytes on
const CONTENTS_PADDING = 9;
const REGULAR_CLOSE = 10; // ")"
const TARGET_KEY = 11; // "target"
const TARGET = 12;
const SYMLINK_CLOSE = 13; // ")"
const DIRECTORY_ITEM = 14; // "entry" | ")"
const ENTRY_OPEN = 15; // "("
const NAME_KEY = 16; // "name"
const NAME = 17;
const NODE_KEY = 18; // "node"
const ENTRY_CLOSE = 19; // ")" after an entry's node
const DONE = 20;

const tag = (s: string): Buffer => Buffer.from(s, 'latin1');
const T_MAGIC = tag(NAR_MAGIC);
const T_OPEN = tag('(');
const T_CLOSE = tag(')');
const T_TYPE = tag('type');
const T_REGULAR = tag('regular');
const T_SYMLINK = tag('symlink');
const T_DIRECTORY = tag('directory');
const T_EXECUTABLE = tag('executable');
const T_CONTENTS = tag('contents');
const T_TARGET = tag('target');
const T_ENTRY = tag('entry');
const T_NAME = tag('name');
const T_NODE = tag('node');

/** The states where the token can only be one tag, and the state after it. */
const FIXED_TAGS: Readonly<Record<number, readonly [Buffer, number]>> = {
  [OPEN]: [T_OPEN, TYPE_KEY],
  [TYPE_KEY]: [T_TYPE, TYPE],
  [CONTENTS_KEY]: [T_CONTENTS, CONTENTS],
  [TARGET_KEY]: [T_TARGET, TARGET],
  [ENTRY_OPEN]: [T_OPEN, NAME_KEY],
  [NAME_KEY]: [T_NAME, NAME],
  [ENTRY_CLOSE]: [T_CLOSE, DIRECTORY_ITEM],
};

/** The longest body read whole: a 4095-byte target plus its one byte of padding. */
const HOLD_SIZE = MAX_TARGET_LENGTH + 1;
const EMPTY = new Uint8Array(0);

function fail(what: string, at: number): never {
  throw new StrataError('NAR_INVALID', `Cannot parse NAR: ${what} at byte ${at}`);
}

/** Whether `b[s..s+n)` is the tag `t`. */
function is(b: Uint8Array, s: number, n: number, t: Buffer): boolean {
  if (n !== t.length) return false;
  for (let i = 0; i < n; i++) if (b[s + i] !== t[i]) return false;
  return true;
}

/** The last name of an open directory, for the order check: a buffer reused for every entry. */
interface Frame {
  readonly last: Buffer;
  lastLength: number; // -1 before the first entry
}

/**
 * The incremental parser.
 *
 * @example
 * ```ts
 * const p = new NarParser();
 * for await (const chunk of stream) p.write(chunk, handler);
 * p.end(); // throws NAR_INVALID if the archive is incomplete
 * ```
 */
export class NarParser {
  #state = MAGIC;
  /** Bytes of the current token's body, padding included; -1 while its length is read. */
  #need = -1;
  /** Bytes of that body before its padding. */
  #n = 0;
  /** Bytes of the current file still to stream. */
  #remaining = 0;
  /** Size of that file (its padding is read after it). */
  #fileSize = 0;
  #executable = false;
  /** Offset of the current token's length field (what error messages point at). */
  #tokenAt = 0;
  /** Bytes consumed by complete reads and streamed contents. */
  #offset = 0;
  /** A read that straddles chunks is gathered here; a NAR fed whole (most) never needs it. */
  #hold: Buffer | undefined;
  #held = 0;
  readonly #frames: Frame[] = [];
  #depth = 0;
  #failed: unknown;

  /** Bytes consumed so far. */
  get offset(): number {
    return this.#offset;
  }

  /** True once the root node is complete. */
  get done(): boolean {
    return this.#state === DONE;
  }

  /**
   * Parses `bytes[start..end)` up to the end of the archive, calling `handler`; returns where it
   * stopped: `end`, or the first byte after the archive (for a NAR inside a larger stream).
   * Throws `NAR_INVALID` on the first fault, after which the parser is unusable.
   */
  parse(bytes: Uint8Array, handler: NarHandler, start = 0, end = bytes.length): number {
    if (this.#failed !== undefined) throw this.#failed;
    let pos = start;
    try {
      while (this.#state !== DONE) {
        if (this.#state === STREAM) {
          if (this.#remaining === 0) {
            this.#state = CONTENTS_PADDING;
            this.#n = 0;
            this.#need = paddingOf(this.#fileSize);
            continue;
          }
          if (pos === end) return pos;
          const k = Math.min(this.#remaining, end - pos);
          handler.contents(bytes, pos, pos + k);
          pos += k;
          this.#offset += k;
          this.#remaining -= k;
          continue;
        }
        const reading = this.#need < 0 ? 8 : this.#need;
        let b: Uint8Array;
        let s: number;
        if (reading === 0) {
          b = EMPTY;
          s = 0;
        } else if (this.#held === 0 && end - pos >= reading) {
          b = bytes;
          s = pos;
          pos += reading;
        } else {
          const k = Math.min(reading - this.#held, end - pos);
          this.#hold ??= Buffer.alloc(HOLD_SIZE);
          this.#hold.set(bytes.subarray(pos, pos + k), this.#held);
          this.#held += k;
          pos += k;
          if (this.#held < reading) return pos;
          this.#held = 0;
          b = this.#hold;
          s = 0;
        }
        const at = this.#offset;
        this.#offset += reading;
        if (this.#need < 0) {
          this.#tokenAt = at;
          this.#length(b, s, handler);
        } else {
          for (let i = this.#n; i < reading; i++) if (b[s + i] !== 0) fail('non-zero padding', at + i);
          this.#need = -1;
          this.#body(b, s, this.#n, handler);
        }
      }
      return pos;
    } catch (e) {
      this.#failed = e;
      throw e;
    }
  }

  /** {@link parse} for input that is one NAR and nothing else: bytes after the archive are an error. */
  write(bytes: Uint8Array, handler: NarHandler): void {
    const stop = this.parse(bytes, handler);
    if (stop < bytes.length) {
      this.#failed = new StrataError('NAR_INVALID', `Cannot parse NAR: ${bytes.length - stop} trailing bytes after the archive at byte ${this.#offset}`);
      throw this.#failed;
    }
  }

  /**
   * {@link write}, as events: for consumers that want values (tests, small NARs). `contents`
   * events are views into `chunk`.
   */
  *feed(chunk: Uint8Array): Generator<NarEvent, void, undefined> {
    const events: NarEvent[] = [];
    this.write(chunk, eventCollector(events));
    yield* events;
  }

  /** Declares the end of input; throws `NAR_INVALID` unless the archive is complete. */
  end(): void {
    if (this.#failed !== undefined) throw this.#failed;
    if (this.#state !== DONE) {
      this.#failed = new StrataError('NAR_INVALID', `Cannot parse NAR: unexpected end of archive at byte ${this.#offset + this.#held}`);
      throw this.#failed;
    }
  }

  /** A token's length field, `b[s..s+8)`: checked against what may come here. */
  #length(b: Uint8Array, s: number, handler: NarHandler): void {
    const state = this.#state;
    const n = u64At(b, s);
    // Anything but the exact magic is "not a NAR", whatever its length says.
    if (state === MAGIC && n !== T_MAGIC.length) fail("bad magic, this is not a NAR (expected 'nix-archive-1')", 0);
    const max = state === CONTENTS || state === EXECUTABLE_MARKER ? MAX_FILE_SIZE : state === TARGET ? MAX_TARGET_LENGTH : state === NAME ? MAX_NAME_LENGTH : MAX_TAG_LENGTH;
    if (n === undefined || n > max) {
      const what = state === CONTENTS ? 'file' : state === EXECUTABLE_MARKER ? 'executable marker' : state === TARGET ? 'symlink target' : state === NAME ? 'name' : 'tag';
      const big = Buffer.from(b.buffer, b.byteOffset + s, 8).readBigUInt64LE(0);
      fail(`${what} length ${big} exceeds ${max}`, this.#tokenAt);
    }
    if (state === EXECUTABLE_MARKER) {
      if (n !== 0) fail('executable marker has a non-empty value', this.#tokenAt);
      this.#state = CONTENTS_KEY;
      return;
    }
    if (state === CONTENTS) {
      handler.regular(this.#executable, n);
      this.#state = STREAM;
      this.#remaining = n;
      this.#fileSize = n;
      return;
    }
    this.#n = n;
    this.#need = n + paddingOf(n);
  }

  /** Fails unless the tag `b[s..s+n)` is `t`. */
  #expect(b: Uint8Array, s: number, n: number, t: Buffer): void {
    if (!is(b, s, n, t)) fail(`expected '${t.toString('latin1')}' but found ${quoteBytes(b.subarray(s, s + n))}`, this.#tokenAt);
  }

  /** After a node's `)`: the archive is done, or its entry closes next. */
  #nodeDone(): void {
    this.#state = this.#depth === 0 ? DONE : ENTRY_CLOSE;
  }

  /** A token's body, `b[s..s+n)` (its padding already checked), where the grammar is at. */
  #body(b: Uint8Array, s: number, n: number, handler: NarHandler): void {
    const fixed = FIXED_TAGS[this.#state] as readonly [Buffer, number] | undefined;
    if (fixed !== undefined) {
      this.#expect(b, s, n, fixed[0]);
      this.#state = fixed[1];
      return;
    }
    switch (this.#state) {
      case MAGIC:
        if (!is(b, s, n, T_MAGIC)) fail("bad magic, this is not a NAR (expected 'nix-archive-1')", 0);
        this.#state = OPEN;
        return;
      case TYPE:
        if (is(b, s, n, T_REGULAR)) {
          this.#executable = false;
          this.#state = REGULAR_FIELD;
        } else if (is(b, s, n, T_SYMLINK)) {
          this.#state = TARGET_KEY;
        } else if (is(b, s, n, T_DIRECTORY)) {
          if (this.#depth >= MAX_DEPTH) fail(`directories nested deeper than ${MAX_DEPTH}`, this.#tokenAt);
          const frame = (this.#frames[this.#depth] ??= { last: Buffer.alloc(MAX_NAME_LENGTH), lastLength: -1 });
          frame.lastLength = -1;
          this.#depth++;
          handler.directory();
          this.#state = DIRECTORY_ITEM;
        } else {
          fail(`unknown node type ${quoteBytes(b.subarray(s, s + n))}`, this.#tokenAt);
        }
        return;
      case REGULAR_FIELD:
        if (is(b, s, n, T_EXECUTABLE)) {
          this.#executable = true;
          this.#state = EXECUTABLE_MARKER;
          return;
        }
        this.#expect(b, s, n, T_CONTENTS);
        this.#state = CONTENTS;
        return;
      case CONTENTS_PADDING:
        this.#state = REGULAR_CLOSE;
        return;
      case REGULAR_CLOSE:
        this.#expect(b, s, n, T_CLOSE);
        handler.regularEnd();
        this.#nodeDone();
        return;
      case TARGET: {
        const problem = targetProblem(b.subarray(s, s + n));
        if (problem) fail(problem, this.#tokenAt);
        handler.symlink(b, s, s + n);
        this.#state = SYMLINK_CLOSE;
        return;
      }
      case SYMLINK_CLOSE:
        this.#expect(b, s, n, T_CLOSE);
        this.#nodeDone();
        return;
      case DIRECTORY_ITEM:
        if (is(b, s, n, T_CLOSE)) {
          this.#depth--;
          handler.directoryEnd();
          this.#nodeDone();
          return;
        }
        if (!is(b, s, n, T_ENTRY)) fail(`expected 'entry' or ')' but found ${quoteBytes(b.subarray(s, s + n))}`, this.#tokenAt);
        this.#state = ENTRY_OPEN;
        return;
      case NAME:
        this.#name(b, s, n);
        this.#state = NODE_KEY;
        return;
      case NODE_KEY: {
        this.#expect(b, s, n, T_NODE);
        const frame = this.#frames[this.#depth - 1]!;
        handler.entry(frame.last, 0, frame.lastLength);
        this.#state = OPEN;
        return;
      }
    }
  }

  /** Checks an entry name (valid, after the previous one in byte order) and keeps it. */
  #name(b: Uint8Array, s: number, n: number): void {
    const name = b.subarray(s, s + n);
    const problem = nameProblem(name);
    if (problem) fail(`invalid entry: ${problem}`, this.#tokenAt);
    const frame = this.#frames[this.#depth - 1]!;
    if (frame.lastLength >= 0) {
      const last = frame.last.subarray(0, frame.lastLength);
      const order = Buffer.compare(last, name);
      if (order === 0) fail(`duplicate entry ${quoteBytes(name)}`, this.#tokenAt);
      if (order > 0) fail(`entry ${quoteBytes(name)} is not sorted after ${quoteBytes(last)}`, this.#tokenAt);
    }
    frame.last.set(name, 0);
    frame.lastLength = n;
  }
}

/** A handler that turns the parse into {@link NarEvent}s (names and targets copied). */
function eventCollector(events: NarEvent[]): NarHandler {
  return {
    regular: (executable, size) => void events.push({ type: 'regular', executable, size }),
    contents: (b, s, e) => void events.push({ type: 'contents', chunk: b.subarray(s, e) }),
    regularEnd: () => void events.push({ type: 'regularEnd' }),
    symlink: (b, s, e) => void events.push({ type: 'symlink', target: Buffer.from(b.subarray(s, e)) }),
    directory: () => void events.push({ type: 'directory' }),
    entry: (b, s, e) => void events.push({ type: 'entry', name: Buffer.from(b.subarray(s, e)) }),
    directoryEnd: () => void events.push({ type: 'directoryEnd' }),
  };
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
