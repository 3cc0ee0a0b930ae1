/**
 * Content addresses (the `ca` of a store path) and `nix store make-content-addressed`
 * (formats.md §7, §8), as pure functions over NAR bytes given whole or as chunks.
 */
import { StrataError } from './error.js';
import { type Hash, isHashAlgo, newHasher, parseHash } from './hash.js';
import { HASH_PART_LENGTH, type StoreDir, type StorePath } from './store-path.js';

/** How the hashed bytes were produced: `text` (a file's bytes, `.drv`/toFile), `flat` (a file's bytes), `recursive` (the NAR). */
export type ContentAddressMethod = 'text' | 'flat' | 'recursive';

/**
 * A content address: `text:sha256:<nix32>`, `fixed:<r:>?<algo>:<nix32>`.
 *
 * The CA of a path added with `nix-store --add` is `{ method: 'recursive', hash: narHash }`;
 * `--add-fixed sha1 f` gives `{ method: 'flat', hash: sha1(f) }`.
 */
export interface ContentAddress {
  readonly method: ContentAddressMethod;
  readonly hash: Hash;
}

/**
 * Parses the `ca` column / narinfo `CA:` text. The digest may be in any encoding Nix accepts
 * (nix32, base16, base64), told apart by length.
 *
 * @example parseContentAddress('fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw').method === 'recursive'
 */
export function parseContentAddress(s: string): ContentAddress {
  const fail = (state: string): never => {
    throw new StrataError('CA_INVALID', `Cannot parse content address '${s}': ${state}`, { value: s });
  };
  let method: ContentAddressMethod;
  let rest: string;
  if (s.startsWith('text:')) {
    method = 'text';
    rest = s.slice(5);
  } else if (s.startsWith('fixed:r:')) {
    method = 'recursive';
    rest = s.slice(8);
  } else if (s.startsWith('fixed:')) {
    method = 'flat';
    rest = s.slice(6);
  } else {
    return fail("it does not start with 'text:' or 'fixed:'");
  }
  const colon = rest.indexOf(':');
  if (colon < 0 || !isHashAlgo(rest.slice(0, colon))) fail('expected <algo>:<hash>');
  if (method === 'text' && !rest.startsWith('sha256:')) fail('text content addresses use sha256');
  let hash: Hash;
  try {
    hash = parseHash(rest);
  } catch (e) {
    return fail((e as Error).message);
  }
  return { method, hash };
}

/**
 * Prints a content address the way Nix writes it (digest in nix32).
 *
 * @example printContentAddress({ method: 'flat', hash }) // 'fixed:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s'
 */
export function printContentAddress(ca: ContentAddress): string {
  const prefix = ca.method === 'text' ? 'text:' : ca.method === 'recursive' ? 'fixed:r:' : 'fixed:';
  return `${prefix}${ca.hash.algo}:${ca.hash.toNix32()}`;
}

/**
 * The store path a content address implies for a name and references: a text path for
 * `text`, a `source` path for `fixed:r:sha256` (references and `self` allowed), else an
 * `output:out` path (no references).
 *
 * @example contentAddressedPath(dir, parseContentAddress(row.ca), 'hello', refs)
 */
export function contentAddressedPath(
  storeDir: StoreDir,
  ca: ContentAddress,
  name: string,
  references: Iterable<StorePath> = [],
  self = false,
): StorePath {
  if (ca.method === 'text') {
    if (self) {
      throw new StrataError('REFERENCES_INVALID', `Cannot make text path '${name}': a text path cannot refer to itself`, { value: name });
    }
    return storeDir.makeTextPath(name, ca.hash, references);
  }
  return storeDir.makeFixedOutputPath(name, ca.hash, ca.method === 'recursive', references, self);
}

/**
 * Checks that `path` really is the path its declared content address gives, with its
 * references (a reference to `path` itself counts as `self`). Throws `CA_MISMATCH` otherwise.
 *
 * @example checkContentAddress(dir, info.path, info.ca, info.references)
 */
export function checkContentAddress(storeDir: StoreDir, path: StorePath, ca: ContentAddress | string, references: Iterable<StorePath>): void {
  const parsed = typeof ca === 'string' ? parseContentAddress(ca) : ca;
  const others = [...references].filter((r) => !r.equals(path));
  const self = others.length !== [...references].length;
  let expected: StorePath;
  try {
    expected = contentAddressedPath(storeDir, parsed, path.name, others, self);
  } catch (e) {
    throw new StrataError('CA_MISMATCH', `Cannot accept content address '${printContentAddress(parsed)}' for '${storeDir.print(path)}': ${(e as Error).message}`, {
      value: storeDir.print(path),
      cause: e,
    });
  }
  if (!expected.equals(path)) {
    throw new StrataError(
      'CA_MISMATCH',
      `Cannot accept content address '${printContentAddress(parsed)}' for '${storeDir.print(path)}': it gives '${storeDir.print(expected)}'`,
      { value: storeDir.print(path) },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Streaming rewriting.

const EMPTY = Buffer.alloc(0);

function toBytes(s: string | Uint8Array): Buffer {
  return typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s);
}

function concat(a: Buffer, b: Uint8Array): Buffer {
  if (a.length === 0) return Buffer.from(b);
  const out = Buffer.allocUnsafe(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/**
 * Replaces every occurrence of `from` with `to` (same length) in a stream, as Nix's
 * `RewritingSink` does: left to right, across chunk borders (it holds back `from.length - 1`
 * bytes), recording the stream offset of each match in {@link matches}.
 *
 * @example
 * ```ts
 * const r = new StringRewriter('abc', 'xyz');
 * Buffer.concat([r.update(Buffer.from('..a')), r.update(Buffer.from('bc..')), r.flush()]).toString() // '..xyz..'
 * ```
 */
export class StringRewriter {
  /** Offsets (in the input stream) where `from` was found. */
  readonly matches: number[] = [];
  private readonly from: Buffer;
  private readonly to: Buffer;
  private prev: Buffer = EMPTY;
  private pos = 0;

  constructor(from: string | Uint8Array, to: string | Uint8Array) {
    this.from = toBytes(from);
    this.to = toBytes(to);
    if (this.from.length === 0 || this.from.length !== this.to.length) {
      throw new StrataError('REWRITE_INVALID', `Cannot rewrite '${this.from.toString('latin1')}': the replacement must have the same non-zero length`, {
        value: this.from.toString('latin1'),
      });
    }
  }

  /** Feeds a chunk; returns the bytes that are final (possibly empty). */
  update(chunk: Uint8Array): Uint8Array {
    const s = concat(this.prev, chunk);
    const same = this.from.equals(this.to);
    let j = 0;
    while ((j = s.indexOf(this.from, j)) >= 0) {
      this.matches.push(this.pos + j);
      if (!same) this.to.copy(s, j);
      j++;
    }
    const keep = Math.min(s.length, this.from.length - 1);
    const consumed = s.length - keep;
    this.prev = Buffer.from(s.subarray(consumed));
    this.pos += consumed;
    return s.subarray(0, consumed);
  }

  /** Ends the stream; returns the held-back bytes. */
  flush(): Uint8Array {
    const out = this.prev;
    this.pos += out.length;
    this.prev = EMPTY;
    return out;
  }
}

/**
 * Hashes a NAR "modulo" a hash part (Nix's `HashModuloSink`): every occurrence of `modulus` is
 * hashed as 32 NUL bytes, and then `|<offset>` for each occurrence. A path's own hash part thus
 * drops out of its hash, which makes self-references content-addressable.
 *
 * @example
 * ```ts
 * const h = new HashModuloSink(oldPath.hashPart);
 * h.update(nar);
 * h.finish().hash.toNix32()
 * ```
 */
export class HashModuloSink {
  private readonly rewriter: StringRewriter;
  private readonly hasher = newHasher('sha256');
  private size = 0;

  constructor(modulus: string) {
    this.rewriter = new StringRewriter(modulus, '\0'.repeat(modulus.length));
  }

  update(chunk: Uint8Array): void {
    this.size += chunk.length;
    this.hasher.update(this.rewriter.update(chunk));
  }

  /** The sha256 modulo, the match offsets and the number of bytes fed. */
  finish(): { hash: Hash; offsets: number[]; size: number } {
    this.hasher.update(this.rewriter.flush());
    for (const off of this.rewriter.matches) this.hasher.update(Buffer.from(`|${off}`, 'latin1'));
    return { hash: this.hasher.digest(), offsets: [...this.rewriter.matches], size: this.size };
  }
}

const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';
const IS_NIX32 = new Uint8Array(256);
for (const c of NIX32) IS_NIX32[c.charCodeAt(0)] = 1;
const L = HASH_PART_LENGTH;

/**
 * Replaces hash parts in a stream in one pass: every 32-byte run of nix32 characters that is a
 * key of `rewrites` becomes its value. Matches are taken left to right and do not overlap;
 * replaced bytes are not looked at again (so `a→b, b→c` maps `a` to `b`, not `c`).
 *
 * @example
 * ```ts
 * const r = new HashPartRewriter(new Map([[oldPath.hashPart, newPath.hashPart]]));
 * out.write(r.update(chunk)); … out.write(r.flush());
 * ```
 */
export class HashPartRewriter {
  private readonly rewrites: Map<string, Buffer>;
  /** 1 for bytes that start some key: most runs are rejected without building a string. */
  private readonly first = new Uint8Array(256);
  private tail: Buffer = EMPTY;
  /** Windows must not start before this index of the next buffer (no overlap with a rewrite). */
  private minStart = 0;

  constructor(rewrites: ReadonlyMap<string, string>) {
    this.rewrites = new Map();
    for (const [k, v] of rewrites) {
      if (k.length !== L || v.length !== L || ![...k + v].every((c) => c.charCodeAt(0) < 256 && IS_NIX32[c.charCodeAt(0)] === 1)) {
        throw new StrataError('REWRITE_INVALID', `Cannot rewrite hash part '${k}' to '${v}': both must be 32 nix32 characters`, { value: k });
      }
      this.rewrites.set(k, Buffer.from(v, 'latin1'));
      this.first[k.charCodeAt(0)] = 1;
    }
  }

  update(chunk: Uint8Array): Uint8Array {
    const s = concat(this.tail, chunk);
    const n = s.length;
    let i = this.minStart;
    while (i + L <= n) {
      if (IS_NIX32[s[i + L - 1]!] === 0) {
        i += L;
        continue;
      }
      let j = i + L - 2;
      while (j >= i && IS_NIX32[s[j]!] === 1) j--;
      if (j >= i) {
        i = j + 1;
        continue;
      }
      const rep = this.first[s[i]!] === 1 ? this.rewrites.get(s.toString('latin1', i, i + L)) : undefined;
      if (rep !== undefined) {
        rep.copy(s, i);
        i += L;
      } else i++;
    }
    const keep = Math.min(n, L - 1);
    const consumed = n - keep;
    this.tail = Buffer.from(s.subarray(consumed));
    this.minStart = Math.max(0, i - consumed);
    return s.subarray(0, consumed);
  }

  flush(): Uint8Array {
    const out = this.tail;
    this.tail = EMPTY;
    this.minStart = 0;
    return out;
  }
}

/**
 * {@link HashPartRewriter} over an iterable of chunks.
 *
 * @example Buffer.concat([...rewriteHashParts([nar], new Map([[oldHash, newHash]]))])
 */
export function* rewriteHashParts(chunks: Iterable<Uint8Array>, rewrites: ReadonlyMap<string, string>): Generator<Uint8Array> {
  const r = new HashPartRewriter(rewrites);
  for (const c of chunks) {
    const out = r.update(c);
    if (out.length > 0) yield out;
  }
  const last = r.flush();
  if (last.length > 0) yield last;
}

// ---------------------------------------------------------------------------------------------
// make-content-addressed.

/** NAR bytes, whole or as a re-readable stream (it is read twice). */
export type NarSource = Uint8Array | (() => Iterable<Uint8Array>);

/** One path to rewrite: its NAR and its registered references (a self-reference included). */
export interface ContentAddressInput {
  path: StorePath;
  references: Iterable<StorePath>;
  nar: NarSource;
}

/** The rewritten path, ready to register. */
export interface ContentAddressedPath {
  oldPath: StorePath;
  path: StorePath;
  /** Remapped references, sorted by base name, the new path itself included if it was self-referring. */
  references: StorePath[];
  /** `fixed:r:sha256:<hash modulo>`. */
  ca: ContentAddress;
  /** sha256 of the final NAR. */
  narHash: Hash;
  narSize: number;
  /** The final NAR, unless an `emit` callback took the chunks. */
  nar?: Uint8Array | undefined;
}

function chunksOf(nar: NarSource): Iterable<Uint8Array> {
  return nar instanceof Uint8Array ? [nar] : nar();
}

/** A chain of single-string rewriters, applied in the order given (Nix: std::map key order). */
class RewriteChain {
  private readonly stages: StringRewriter[];

  constructor(rewrites: Array<[string, string]>) {
    this.stages = rewrites.map(([a, b]) => new StringRewriter(a, b));
  }

  update(chunk: Uint8Array): Uint8Array {
    let c = chunk;
    for (const s of this.stages) c = s.update(c);
    return c;
  }

  flush(): Uint8Array {
    let out: Uint8Array = EMPTY;
    for (const s of this.stages) out = Buffer.concat([s.update(out), s.flush()]);
    return out;
  }
}

/**
 * Rewrites one path to a content-addressed `source` path, as `nix store make-content-addressed`
 * (2.8) does: the full paths of remapped references are replaced, the NAR is hashed modulo
 * its old hash part, the new path is made with `:self` when it referred to itself, and the old
 * hash part is replaced by the new one.
 *
 * @param remappings old base name → new path, for references rewritten earlier.
 * @example
 * ```ts
 * const r = makeContentAddressed(dir, { path, references, nar }, new Map());
 * printContentAddress(r.ca) // 'fixed:r:sha256:…'
 * ```
 */
export function makeContentAddressed(
  storeDir: StoreDir,
  input: ContentAddressInput,
  remappings: ReadonlyMap<string, StorePath>,
  options: { emit?: (chunk: Uint8Array) => void } = {},
): ContentAddressedPath {
  const old = input.path;
  let self = false;
  const refs = new Map<string, StorePath>();
  const pathRewrites = new Map<string, string>();
  for (const ref of input.references) {
    if (ref.equals(old)) {
      self = true;
      continue;
    }
    const replacement = remappings.get(ref.baseName) ?? ref;
    if (!replacement.equals(ref)) pathRewrites.set(storeDir.print(ref), storeDir.print(replacement));
    refs.set(replacement.baseName, replacement);
  }
  const rewriteList = [...pathRewrites].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));

  // Pass 1: rewrite references, hash modulo the old hash part.
  const chain1 = new RewriteChain(rewriteList);
  const modulo = new HashModuloSink(old.hashPart);
  for (const c of chunksOf(input.nar)) modulo.update(chain1.update(c));
  modulo.update(chain1.flush());
  const { hash, size } = modulo.finish();
  const others = [...refs.values()];
  const path = storeDir.makeFixedOutputPath(old.name, hash, true, others, self);

  // Pass 2: the same rewrites, then the old hash part becomes the new one.
  const chain2 = new RewriteChain([...rewriteList, [old.hashPart, path.hashPart]]);
  const hasher = newHasher('sha256');
  const collected: Uint8Array[] = [];
  const out = (c: Uint8Array): void => {
    if (c.length === 0) return;
    hasher.update(c);
    if (options.emit) options.emit(c);
    else collected.push(Buffer.from(c));
  };
  for (const c of chunksOf(input.nar)) out(chain2.update(c));
  out(chain2.flush());

  if (self) refs.set(path.baseName, path);
  return {
    oldPath: old,
    path,
    references: [...refs.keys()].sort().map((k) => refs.get(k)!),
    ca: { method: 'recursive', hash },
    narHash: hasher.digest(),
    narSize: size,
    nar: options.emit ? undefined : Buffer.concat(collected),
  };
}

/**
 * Rewrites a whole closure, dependencies first (references outside `closure` stay as they are).
 * Returns old base name → result.
 *
 * @example makeClosureContentAddressed(dir, [simple, dependent, refs]).get(refs.path.baseName)!.path
 */
export function makeClosureContentAddressed(storeDir: StoreDir, closure: Iterable<ContentAddressInput>): Map<string, ContentAddressedPath> {
  const byBase = new Map<string, ContentAddressInput>();
  for (const i of closure) byBase.set(i.path.baseName, i);
  const results = new Map<string, ContentAddressedPath>();
  const remappings = new Map<string, StorePath>();
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (base: string): void => {
    const st = state.get(base);
    if (st === 'done') return;
    if (st === 'visiting') {
      throw new StrataError('REFERENCES_INVALID', `Cannot make '${base}' content-addressed: it is part of a reference cycle`, { value: base });
    }
    state.set(base, 'visiting');
    const input = byBase.get(base)!;
    const refs = [...input.references];
    for (const r of refs) if (r.baseName !== base && byBase.has(r.baseName)) visit(r.baseName);
    const res = makeContentAddressed(storeDir, { ...input, references: refs }, remappings);
    results.set(base, res);
    remappings.set(base, res.path);
    state.set(base, 'done');
  };
  for (const base of [...byBase.keys()].sort()) visit(base);
  return results;
}
