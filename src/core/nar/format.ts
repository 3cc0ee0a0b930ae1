/**
 * The NAR (Nix ARchive) format: constants, the `str()` framing, limits, name checks, and the
 * two shapes NAR content takes in strata: a flat stream of {@link NarEvent}s (what the parser
 * emits and the writer consumes) and a {@link NarEntry} tree whose file contents are streams.
 *
 * ```
 * nar  = str("nix-archive-1") node
 * node = str("(") str("type") body str(")")
 * body = str("regular") [str("executable") str("")] str("contents") str(<bytes>)
 *      | str("symlink") str("target") str(<target>)
 *      | str("directory") { str("entry") str("(") str("name") str(<name>) str("node") node str(")") }
 * ```
 * `str(b)` is a u64 little-endian length, the bytes, then zero bytes up to a multiple of 8.
 * Pure: no I/O here.
 */

/** The magic string every NAR starts with. */
export const NAR_MAGIC = 'nix-archive-1';

/** Longest entry name we accept: NAME_MAX on Linux is 255 bytes. */
export const MAX_NAME_LENGTH = 255;
/** Longest symlink target we accept: PATH_MAX (4096) minus the NUL byte. */
export const MAX_TARGET_LENGTH = 4095;
/** Deepest directory nesting we accept. Real trees rarely pass 30; 256 leaves room and bounds recursion. */
export const MAX_DEPTH = 256;
/** Largest file size we accept: beyond 2^53 - 1 a JS number loses precision. */
export const MAX_FILE_SIZE = Number.MAX_SAFE_INTEGER;
/** Longest tag: `nix-archive-1` has 13 bytes, so a 16-byte cap rejects garbage lengths early. */
export const MAX_TAG_LENGTH = 16;

/**
 * One step of a NAR, in archive order. A regular file is `regular`, zero or more `contents`
 * chunks (their lengths add up to `size`), then `regularEnd`. A directory is `directory`, then
 * for each child `entry` followed by the child's events, then `directoryEnd`. A symlink is one
 * `symlink` event. Names are raw bytes (Linux names need not be UTF-8).
 *
 * `contents` chunks emitted by the parser are views into the fed buffer: copy them if you keep
 * them past the event.
 */
export type NarEvent =
  | { readonly type: 'regular'; readonly executable: boolean; readonly size: number }
  | { readonly type: 'contents'; readonly chunk: Uint8Array }
  | { readonly type: 'regularEnd' }
  | { readonly type: 'symlink'; readonly target: Uint8Array }
  | { readonly type: 'directory' }
  | { readonly type: 'entry'; readonly name: Uint8Array }
  | { readonly type: 'directoryEnd' };

/** Chunks of file contents, sync or async. */
export type ByteSource = Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/**
 * A NAR node as a tree. Directory entries may come in any order; the writer sorts them.
 *
 * @example
 * ```ts
 * const tree: NarEntry = {
 *   type: 'directory',
 *   entries: [[bytes('hello'), { type: 'regular', executable: false, size: 2, contents: [bytes('hi')] }]],
 * };
 * ```
 */
export type NarEntry =
  | { readonly type: 'regular'; readonly executable: boolean; readonly size: number; readonly contents: ByteSource }
  | { readonly type: 'directory'; readonly entries: Iterable<readonly [Uint8Array, NarEntry]> }
  | { readonly type: 'symlink'; readonly target: Uint8Array };

/** Number of zero bytes that pad `length` bytes up to a multiple of 8. */
export function paddingOf(length: number): number {
  return (8 - (length % 8)) % 8;
}

/** Encodes a u64 little-endian length (must be a safe integer). */
export function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(n % 0x1_0000_0000, 0);
  b.writeUInt32LE(Math.floor(n / 0x1_0000_0000), 4);
  return b;
}

/**
 * The `str()` framing: length, bytes, zero padding to 8.
 *
 * @example str('(').length === 16
 */
export function str(s: string | Uint8Array): Buffer {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const out = Buffer.alloc(8 + bytes.length + paddingOf(bytes.length));
  out.writeUInt32LE(bytes.length % 0x1_0000_0000, 0);
  out.writeUInt32LE(Math.floor(bytes.length / 0x1_0000_0000), 4);
  out.set(bytes, 8);
  return out;
}

/** Byte-wise (memcmp) order of two names, as Nix sorts directory entries: <0, 0 or >0. */
export function compareNames(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

/**
 * Why `name` cannot be a NAR entry name, or `undefined` when it can: names are 1 to
 * {@link MAX_NAME_LENGTH} bytes, not `.` or `..`, without `/` or NUL.
 */
export function nameProblem(name: Uint8Array): string | undefined {
  if (name.length === 0) return 'empty name';
  if (name.length > MAX_NAME_LENGTH) return `name longer than ${MAX_NAME_LENGTH} bytes`;
  if (name.length === 1 && name[0] === 0x2e) return "name '.'";
  if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) return "name '..'";
  if (name.includes(0x2f)) return `name ${quoteBytes(name)} contains '/'`;
  if (name.includes(0)) return `name ${quoteBytes(name)} contains a NUL byte`;
  return undefined;
}

/** Why `target` cannot be a symlink target, or `undefined`: 1 to 4095 bytes, no NUL. */
export function targetProblem(target: Uint8Array): string | undefined {
  if (target.length === 0) return 'empty symlink target';
  if (target.length > MAX_TARGET_LENGTH) return `symlink target longer than ${MAX_TARGET_LENGTH} bytes`;
  if (target.includes(0)) return 'symlink target contains a NUL byte';
  return undefined;
}

/** Quotes bytes for a one-line message: UTF-8 when printable, JSON-escaped, cut at 64 chars. */
export function quoteBytes(b: Uint8Array): string {
  const s = JSON.stringify(Buffer.from(b).toString('utf8'));
  return s.length > 66 ? `${s.slice(0, 63)}…"` : s;
}

/**
 * The little-endian u64 at `at` in `b`, or `undefined` when it is 2^53 or more (no JS number
 * holds it exactly). By hand, not through a Buffer view: NARs have several lengths per entry.
 */
export function u64At(b: Uint8Array, at: number): number | undefined {
  const lo = (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x100_0000;
  const hi = (b[at + 4]! | (b[at + 5]! << 8) | (b[at + 6]! << 16)) + b[at + 7]! * 0x100_0000;
  return hi > 0x1f_ffff ? undefined : hi * 0x1_0000_0000 + lo;
}

const FLAT_HEAD = Buffer.concat([str(NAR_MAGIC), str('('), str('type'), str('regular')]);
const FLAT_EXEC = Buffer.concat([str('executable'), str('')]);
const FLAT_CONTENTS = str('contents');
const FLAT_TAIL = str(')');

/**
 * The contents of the regular file a NAR holds at its top, as a view into `nar`, or `undefined`
 * when the NAR holds something else. Lets a flat or text content address be checked against a
 * NAR in memory without writing the file and reading it back.
 */
export function flatFileContents(nar: Uint8Array): Uint8Array | undefined {
  const b = Buffer.from(nar.buffer, nar.byteOffset, nar.byteLength);
  if (b.length < FLAT_HEAD.length || !b.subarray(0, FLAT_HEAD.length).equals(FLAT_HEAD)) return undefined;
  let at = FLAT_HEAD.length;
  if (b.subarray(at, at + FLAT_EXEC.length).equals(FLAT_EXEC)) at += FLAT_EXEC.length;
  if (!b.subarray(at, at + FLAT_CONTENTS.length).equals(FLAT_CONTENTS) || b.length < at + FLAT_CONTENTS.length + 8) return undefined;
  at += FLAT_CONTENTS.length;
  const size = u64At(b, at);
  if (size === undefined) return undefined;
  at += 8;
  const end = at + size + paddingOf(size);
  if (end + FLAT_TAIL.length !== b.length || !b.subarray(end).equals(FLAT_TAIL)) return undefined;
  for (let i = at + size; i < end; i++) if (b[i] !== 0) return undefined;
  return b.subarray(at, at + size);
}
