/**
 * Store paths: `<storeDir>/<hash32>-<name>`. Parsing and validation follow Nix 2.8 exactly
 * (names of 1 to 211 bytes from `[0-9a-zA-Z+\-._?=]`; `.` and `..` are still accepted there),
 * and `make*` compute the path of every kind of store object.
 */

import { StrataError } from './error.js';
import { compressHash, Hash, isNix32, nix32Encode } from './hash.js';

/** The logical store directory used when none is configured. */
export const DEFAULT_STORE_DIR = '/nix/store';
/** Length of the hash part: nix32 of 20 bytes. */
export const HASH_PART_LENGTH = 32;
/** Nix 2.8 refuses longer names (`has a name longer than 211 characters`). */
export const MAX_NAME_LENGTH = 211;

const NAME_CHAR = /^[0-9a-zA-Z+\-._?=]$/;
/** A whole name of legal characters: one test, where a test per character made a string each. */
const NAME = /^[0-9a-zA-Z+\-._?=]+$/;

/** Checks a store path name as Nix 2.8 does; throws `NAME_INVALID` with Nix's wording. */
export function checkName(name: string, context = name): void {
  if (name.length === 0) {
    throw new StrataError('NAME_INVALID', `Store path '${context}' has an empty name`, { value: context });
  }
  if (name.length > MAX_NAME_LENGTH) {
    throw new StrataError('NAME_INVALID', `Store path '${context}' has a name longer than ${MAX_NAME_LENGTH} characters`, { value: context });
  }
  if (NAME.test(name)) return;
  for (const c of name) {
    if (!NAME_CHAR.test(c)) {
      throw new StrataError('NAME_INVALID', `Store path '${context}' contains illegal character '${c}'`, { value: context });
    }
  }
}

/** One store object's identity, independent of the store dir: a hash part and a name. */
export class StorePath {
  readonly hashPart: string;
  readonly name: string;

  private constructor(hashPart: string, name: string) {
    this.hashPart = hashPart;
    this.name = name;
  }

  /** Parses `<hash32>-<name>` (the base name of a store path). */
  static fromBaseName(base: string): StorePath {
    if (base.length < HASH_PART_LENGTH + 1 || base[HASH_PART_LENGTH] !== '-') {
      throw new StrataError('PATH_INVALID', `Cannot parse store path '${base}': it is not '<hash>-<name>'`, { value: base });
    }
    const hashPart = base.slice(0, HASH_PART_LENGTH);
    if (!isNix32(hashPart)) {
      throw new StrataError('PATH_INVALID', `Cannot parse store path '${base}': the hash part is not nix32`, { value: base });
    }
    const name = base.slice(HASH_PART_LENGTH + 1);
    checkName(name, base);
    return new StorePath(hashPart, name);
  }

  /** Builds a path from a 20-byte digest and a name, validating the name. */
  static fromParts(hash20: Uint8Array, name: string): StorePath {
    const hashPart = nix32Encode(hash20);
    checkName(name, `${hashPart}-${name}`);
    return new StorePath(hashPart, name);
  }

  get baseName(): string {
    return `${this.hashPart}-${this.name}`;
  }

  isDerivation(): boolean {
    return this.name.endsWith('.drv');
  }

  equals(other: StorePath): boolean {
    return this.hashPart === other.hashPart && this.name === other.name;
  }

  toString(): string {
    return this.baseName;
  }
}

/**
 * A store directory, e.g. `/nix/store`, with the operations that need it: printing and parsing
 * full paths and computing paths.
 */
export class StoreDir {
  readonly path: string;

  constructor(path: string = DEFAULT_STORE_DIR) {
    if (!path.startsWith('/') || (path.length > 1 && path.endsWith('/'))) {
      throw new StrataError('STORE_DIR_INVALID', `Cannot use store dir '${path}': it must be absolute with no trailing slash`, { value: path });
    }
    this.path = path;
  }

  print(p: StorePath): string {
    return `${this.path}/${p.baseName}`;
  }

  /** Parses a full store path; it must sit directly in this store dir. */
  parse(full: string): StorePath {
    const prefix = `${this.path}/`;
    if (!full.startsWith(prefix)) {
      throw new StrataError('PATH_INVALID', `Cannot parse store path '${full}': it is not in '${this.path}'`, { value: full });
    }
    const base = full.slice(prefix.length);
    if (base.includes('/')) {
      throw new StrataError('PATH_INVALID', `Cannot parse store path '${full}': it is not a top-level store path`, { value: full });
    }
    return StorePath.fromBaseName(base);
  }

  /** True when `full` parses as a store path of this dir. */
  isStorePath(full: string): boolean {
    try {
      this.parse(full);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Turns a path inside the store (`/nix/store/<hash>-x/bin/y`) into its store path, as
   * `nix-store` does for arguments that point into a store object.
   */
  toStorePath(full: string): StorePath {
    const prefix = `${this.path}/`;
    if (!full.startsWith(prefix)) this.parse(full);
    const base = full.slice(prefix.length).split('/')[0] ?? '';
    return StorePath.fromBaseName(base);
  }

  /**
   * The generic construction: `nix32(compressHash(sha256("<type>:sha256:<hex>:<storeDir>:<name>"), 20))`.
   */
  makeStorePath(type: string, innerSha256Hex: string, name: string): StorePath {
    const fingerprint = `${type}:sha256:${innerSha256Hex}:${this.path}:${name}`;
    return StorePath.fromParts(compressHash(Hash.of('sha256', fingerprint).bytes, 20), name);
  }

  private typeWithReferences(kind: string, references: Iterable<StorePath>, self = false): string {
    const full = [...new Set([...references].map((r) => this.print(r)))].sort();
    return [kind, ...full, ...(self ? ['self'] : [])].join(':');
  }

  /** A text path (`builtins.toFile`, `.drv` files): sha256 of the contents, with references. */
  makeTextPath(name: string, contentsSha256: Hash, references: Iterable<StorePath> = []): StorePath {
    if (contentsSha256.algo !== 'sha256') {
      throw new StrataError('HASH_INVALID', `Cannot make text path '${name}': text paths need a sha256 hash`, { value: name });
    }
    return this.makeStorePath(this.typeWithReferences('text', references), contentsSha256.toBase16(), name);
  }

  /**
   * A fixed-output path. Recursive sha256 is a `source` path (references and `self` allowed);
   * everything else hashes `fixed:out:<r:>algo:<hex>:` and may have no references.
   */
  makeFixedOutputPath(
    name: string,
    hash: Hash,
    recursive: boolean,
    references: Iterable<StorePath> = [],
    self = false,
  ): StorePath {
    if (recursive && hash.algo === 'sha256') {
      return this.makeStorePath(this.typeWithReferences('source', references, self), hash.toBase16(), name);
    }
    if ([...references].length > 0 || self) {
      throw new StrataError('REFERENCES_INVALID', `Cannot make fixed-output path '${name}': only recursive sha256 paths may have references`, { value: name });
    }
    const inner = Hash.of('sha256', `fixed:out:${recursive ? 'r:' : ''}${hash.algo}:${hash.toBase16()}:`).toBase16();
    return this.makeStorePath('output:out', inner, name);
  }

  /** The output path of an input-addressed derivation, from its hashDerivationModulo. */
  makeOutputPath(outputName: string, hdmHex: string, drvName: string): StorePath {
    const name = outputName === 'out' ? drvName : `${drvName}-${outputName}`;
    return this.makeStorePath(`output:${outputName}`, hdmHex, name);
  }
}

/** Nix's order of store paths: by base name, which matches full-path order in one dir. */
export function compareStorePaths(a: StorePath, b: StorePath): number {
  return a.baseName < b.baseName ? -1 : a.baseName > b.baseName ? 1 : 0;
}

/** Sorts store paths as Nix does ({@link compareStorePaths}). */
export function sortStorePaths(paths: Iterable<StorePath>): StorePath[] {
  return [...paths].sort(compareStorePaths);
}
