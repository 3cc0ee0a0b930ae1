/**
 * `.narinfo` files and `nix-cache-info`, byte for byte as Nix 2.8 reads and writes them
 * (`src/libstore/nar-info.cc`, `binary-cache-store.cc`).
 *
 * A narinfo is a list of `Key: value\n` lines. {@link printNarInfo} writes the fields in Nix's
 * order, so `printNarInfo(parseNarInfo(text))` gives back the text a real `nix copy` wrote.
 * {@link parseNarInfo} accepts what Nix accepts, except where Nix is lax in ways that can only
 * hide a broken or hostile cache (see its doc); those inputs fail with `NARINFO_INVALID`.
 */
import { StrataError } from './error.js';
import { type Hash, HASH_SIZES, type HashAlgo, isNix32Of, parseHash } from './hash.js';
import { DEFAULT_STORE_DIR, StoreDir, StorePath, sortStorePaths } from './store-path.js';
import type { PathInfo } from '../store/store.js';

/**
 * Compression names Nix 2.8 writes in `Compression:`. Others are kept as strings by the parser;
 * the decompressor rejects what it cannot read.
 */
export type NarCompression = 'none' | 'xz' | 'bzip2' | 'zstd' | 'br' | 'lz4' | 'lzip';

/** What a binary cache says about one store path: a {@link PathInfo} plus where its NAR file is. */
export interface NarInfo extends PathInfo {
  /** Where the (compressed) NAR file is, relative to the cache root, e.g. `nar/<hash>.nar.xz`. */
  url: string;
  /** `none`, `xz`, `bzip2`, `zstd`, `br`, … (a missing line means `bzip2`). */
  compression: string;
  /** sha256 of the compressed file. */
  fileHash?: Hash | undefined;
  /** Size of the compressed file in bytes. */
  fileSize?: number | undefined;
  /** The platform the path was built for, e.g. `x86_64-linux` (`nix copy` from a local store omits it). */
  system?: string | undefined;
}

/** What a cache's `nix-cache-info` file says. Absent keys are `undefined`. */
export interface CacheInfo {
  /** The store dir the cache's paths belong to; a client with another store dir must refuse it. */
  storeDir?: string | undefined;
  /** Whether clients may query many paths at once (`WantMassQuery: 1`). */
  wantMassQuery?: boolean | undefined;
  /** Lower is preferred (cache.nixos.org says 40; absent, Nix 2.8 uses 0). */
  priority?: number | undefined;
}

/**
 * A whole narinfo may be at most 1 MiB. Nix has no limit, but a cache is untrusted input and a
 * narinfo is read into memory whole. The only field that grows is `References`: 1 MiB holds
 * about 4,200 references at the longest legal base name (32 + 1 + 211 bytes) and about 17,000 at
 * a typical 60 bytes, while the largest real paths have a few hundred direct references.
 */
export const MAX_NARINFO_BYTES = 1024 * 1024;
/**
 * Any other line may be at most 64 KiB. The longest legitimate values are a full store path
 * (under 300 bytes with `/nix/store`), a URL of the same order and a 100-byte Sig line, so 64 KiB
 * is 200 times what a real cache writes and still small enough to reject junk early.
 */
export const MAX_NARINFO_LINE_BYTES = 64 * 1024;

/** Fields that may appear once. `Sig` may repeat; unknown keys are ignored, as in Nix. */
const SINGLE_FIELDS = new Set([
  'StorePath',
  'URL',
  'Compression',
  'FileHash',
  'FileSize',
  'NarHash',
  'NarSize',
  'References',
  'Deriver',
  'System',
  'CA',
]);

// A Sig line is `<key name>:<base64>`; the key name has no whitespace and no colon.
const SIG_RE = /^[^\s:]+:[A-Za-z0-9+/]+={0,2}$/;
// Canonical decimal, so that parse∘print is the identity (Nix would also take "007").
const DECIMAL_RE = /^(0|[1-9][0-9]*)$/;
// `text:sha256:<hash>` or `fixed:[r:]<algo>:<hash>` (Nix 2.8's renderContentAddress forms).
const CA_RE = /^(text:sha256|fixed:(?:r:)?(?:md5|sha1|sha256|sha512)):(.+)$/;
// Any C0 control character but \n, and DEL: none can appear in anything Nix writes.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_RE = /[\u0000-\u0009\u000b-\u001f\u007f]/;

/** The value quoted for an error message: one line, at most 80 characters. */
function quote(s: string): string {
  const clean = JSON.stringify(s).slice(1, -1);
  return clean.length > 80 ? `${clean.slice(0, 77)}...` : clean;
}

function invalid(whence: string, state: string, cause?: unknown): StrataError {
  return new StrataError('NARINFO_INVALID', `Cannot parse narinfo '${quote(whence)}': ${state}`, {
    value: whence,
    cause,
  });
}

function parseSize(whence: string, key: string, value: string): number {
  const n = Number(value);
  if (!DECIMAL_RE.test(value) || !Number.isSafeInteger(n)) {
    throw invalid(whence, `${key} '${quote(value)}' is not a decimal number`);
  }
  return n;
}

function parseSha256(whence: string, key: string, value: string): Hash {
  let h: Hash;
  try {
    h = parseHash(value);
  } catch (e) {
    throw invalid(whence, `${key} '${quote(value)}' is not a valid hash`, e);
  }
  // Nix prints and fingerprints these as sha256 only (it asserts that when writing).
  if (h.algo !== 'sha256') throw invalid(whence, `${key} '${quote(value)}' is not a sha256 hash`);
  return h;
}

function parseBaseName(whence: string, key: string, value: string): StorePath {
  try {
    return StorePath.fromBaseName(value);
  } catch (e) {
    throw invalid(whence, `${key} '${quote(value)}' is not a store path base name`, e);
  }
}

/**
 * Checks a `CA:` value and returns it as Nix renders it (hash in nix32), so that a narinfo
 * written with another hash encoding still prints the way Nix would print it.
 */
function canonicalCa(whence: string, value: string): string {
  const m = CA_RE.exec(value);
  if (m === null) throw invalid(whence, `CA '${quote(value)}' is not a content address`);
  const prefix = m[1]!;
  const algo = prefix.slice(prefix.lastIndexOf(':') + 1) as HashAlgo;
  // Already as Nix prints it (what Nix writes): kept as it is, not decoded and encoded again.
  if (isNix32Of(m[2]!, HASH_SIZES[algo])) return value;
  try {
    return `${prefix}:${parseHash(`${algo}:${m[2]!}`).toNix32()}`;
  } catch (e) {
    throw invalid(whence, `CA '${quote(value)}' has a bad hash`, e);
  }
}

/** Options for {@link parseNarInfo}. */
export interface ParseNarInfoOptions {
  /** The store dir StorePath must be in (default `/nix/store`). */
  storeDir?: StoreDir | undefined;
  /** Where the text came from (a URL or file name), for error messages. Default `narinfo`. */
  whence?: string | undefined;
}

/**
 * Parses a narinfo. Follows Nix 2.8: lines split at the first `:` with the value after `": "`,
 * unknown keys ignored, a missing `Compression` means `bzip2`, `Deriver: unknown-deriver` means
 * none, hashes in any prefixed or SRI form, StorePath/URL/NarHash and a non-zero NarSize required.
 *
 * Stricter than Nix (each throws `NARINFO_INVALID`): a text over {@link MAX_NARINFO_BYTES} or a
 * non-References line over {@link MAX_NARINFO_LINE_BYTES}; a missing final `\n`; CR or other
 * control characters; a line without `": "`; a single field given twice; sizes that are not
 * canonical decimals; NarHash or FileHash that is not sha256; a malformed Sig or CA.
 *
 * @example
 * ```ts
 * const info = parseNarInfo(await (await fetch(`${cache}/${hashPart}.narinfo`)).text());
 * info.narHash.toString(); // 'sha256:0qjh…'
 * ```
 */
export function parseNarInfo(
  text: string | Uint8Array,
  options: ParseNarInfoOptions = {},
): NarInfo {
  const storeDir = options.storeDir ?? new StoreDir(DEFAULT_STORE_DIR);
  const whence = options.whence ?? 'narinfo';
  if (typeof text !== 'string') {
    if (text.length > MAX_NARINFO_BYTES)
      throw invalid(whence, `it is larger than ${MAX_NARINFO_BYTES} bytes`);
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(text);
    } catch (e) {
      throw invalid(whence, 'it is not UTF-8', e);
    }
  }
  // A UTF-8 character takes 1 to 3 bytes per UTF-16 unit, so only long texts need encoding to measure.
  if (
    text.length > MAX_NARINFO_BYTES / 3 &&
    new TextEncoder().encode(text).length > MAX_NARINFO_BYTES
  ) {
    throw invalid(whence, `it is larger than ${MAX_NARINFO_BYTES} bytes`);
  }
  if (text.length > 0 && !text.endsWith('\n'))
    throw invalid(whence, 'its last line does not end in a newline');

  // One test of the whole text; the line is looked for only to say which one.
  if (CONTROL_RE.test(text)) {
    const lines = text.split('\n');
    const i = lines.findIndex((l) => CONTROL_RE.test(l));
    throw invalid(
      whence,
      `line ${i + 1} contains a ${lines[i]!.includes('\r') ? 'carriage return' : 'control character'}`,
    );
  }
  const seen = new Set<string>();
  const fields = new Map<string, string>();
  const sigs = new Set<string>();
  // Line by line without splitting (the text ends in '\n'): no array of lines, and no message
  // made for a line unless it is wrong (a closure answer parses hundreds of narinfos).
  for (let start = 0, lineNo = 1; start < text.length; lineNo++) {
    const end = text.indexOf('\n', start);
    const line = text.slice(start, end);
    start = end + 1;
    const colon = line.indexOf(':');
    if (colon <= 0 || line[colon + 1] !== ' ')
      throw invalid(whence, `line ${lineNo} is not 'Key: value'`);
    const key = line.slice(0, colon);
    const value = line.slice(colon + 2);
    if (key !== 'References' && line.length > MAX_NARINFO_LINE_BYTES) {
      throw invalid(whence, `line ${lineNo} is longer than ${MAX_NARINFO_LINE_BYTES} bytes`);
    }
    if (key === 'Sig') {
      if (!SIG_RE.test(value))
        throw invalid(whence, `Sig '${quote(value)}' is not 'keyname:base64'`);
      sigs.add(value);
    } else if (SINGLE_FIELDS.has(key)) {
      if (seen.has(key)) throw invalid(whence, `${key} appears more than once`);
      seen.add(key);
      fields.set(key, value);
    }
  }

  const storePath = fields.get('StorePath');
  if (storePath === undefined) throw invalid(whence, 'StorePath is missing');
  let path: StorePath;
  try {
    path = storeDir.parse(storePath);
  } catch (e) {
    throw invalid(
      whence,
      `StorePath '${quote(storePath)}' is not a store path in '${storeDir.path}'`,
      e,
    );
  }
  const url = fields.get('URL');
  if (url === undefined || url === '') throw invalid(whence, 'URL is missing');
  const narHashText = fields.get('NarHash');
  if (narHashText === undefined) throw invalid(whence, 'NarHash is missing');
  const narHash = parseSha256(whence, 'NarHash', narHashText);
  const narSizeText = fields.get('NarSize');
  if (narSizeText === undefined) throw invalid(whence, 'NarSize is missing');
  const narSize = parseSize(whence, 'NarSize', narSizeText);
  if (narSize === 0) throw invalid(whence, 'NarSize is zero');

  // Nix keeps references in a set: duplicates collapse and the order is by base name.
  const refsText = fields.get('References') ?? '';
  const references = sortStorePaths(
    new Map(
      refsText
        .split(' ')
        .filter((r) => r !== '')
        .map((r) => [r, parseBaseName(whence, 'References entry', r)] as const),
    ).values(),
  );

  const info: NarInfo = {
    path,
    narHash,
    narSize,
    references,
    ultimate: false,
    sigs: [...sigs].sort(),
    url,
    // Nix 2.8: `if (compression == "") compression = "bzip2";` (the format predates the field).
    compression: fields.get('Compression') || 'bzip2',
  };
  const fileHash = fields.get('FileHash');
  // Uncompressed, the file is the NAR: the same text, decoded once.
  if (fileHash !== undefined)
    info.fileHash = fileHash === narHashText ? narHash : parseSha256(whence, 'FileHash', fileHash);
  const fileSize = fields.get('FileSize');
  if (fileSize !== undefined) info.fileSize = parseSize(whence, 'FileSize', fileSize);
  const deriver = fields.get('Deriver');
  if (deriver !== undefined && deriver !== 'unknown-deriver')
    info.deriver = parseBaseName(whence, 'Deriver', deriver);
  const system = fields.get('System');
  if (system !== undefined && system !== '') info.system = system;
  const ca = fields.get('CA');
  if (ca !== undefined) info.ca = canonicalCa(whence, ca);
  return info;
}

/**
 * Prints a narinfo exactly as Nix 2.8's `NarInfo::to_string` does: StorePath, URL, Compression,
 * FileHash, FileSize, NarHash, NarSize, References (base names, sorted; `References: ` when
 * empty), Deriver, System, Sig lines (sorted), CA. Optional fields are left out when absent.
 *
 * @example
 * ```ts
 * printNarInfo(parseNarInfo(text)) === text; // for every narinfo Nix wrote
 * ```
 */
export function printNarInfo(
  info: NarInfo,
  storeDir: StoreDir = new StoreDir(DEFAULT_STORE_DIR),
): string {
  const where = storeDir.print(info.path);
  const fail = (state: string): StrataError =>
    new StrataError('NARINFO_INVALID', `Cannot print narinfo '${where}': ${state}`, {
      value: where,
    });
  if (info.url === '' || /[\n\r]/.test(info.url))
    throw fail('its URL is empty or has a line break');
  if (info.compression === '' || /\s/.test(info.compression))
    throw fail('its compression name is empty or has whitespace');
  if (info.narHash.algo !== 'sha256') throw fail('its NarHash is not sha256');
  if (info.fileHash !== undefined && info.fileHash.algo !== 'sha256')
    throw fail('its FileHash is not sha256');
  if (!Number.isSafeInteger(info.narSize) || info.narSize <= 0)
    throw fail('its NarSize is not a positive integer');
  if (info.system !== undefined && /[\n\r]/.test(info.system))
    throw fail('its System has a line break');
  const sigs = [...new Set(info.sigs)].sort();
  for (const s of sigs)
    if (!SIG_RE.test(s)) throw fail(`Sig '${quote(s)}' is not 'keyname:base64'`);

  let out = `StorePath: ${where}\n`;
  out += `URL: ${info.url}\n`;
  out += `Compression: ${info.compression}\n`;
  if (info.fileHash !== undefined) out += `FileHash: ${info.fileHash.toString('nix32')}\n`;
  if (info.fileSize !== undefined) out += `FileSize: ${info.fileSize}\n`;
  out += `NarHash: ${info.narHash.toString('nix32')}\n`;
  out += `NarSize: ${info.narSize}\n`;
  const refs = [...new Set(sortStorePaths(info.references).map((r) => r.baseName))];
  out += `References: ${refs.join(' ')}\n`;
  if (info.deriver !== undefined) out += `Deriver: ${info.deriver.baseName}\n`;
  if (info.system !== undefined && info.system !== '') out += `System: ${info.system}\n`;
  for (const s of sigs) out += `Sig: ${s}\n`;
  if (info.ca !== undefined) out += `CA: ${canonicalCa(where, info.ca)}\n`;
  return out;
}

/** Where a NAR file goes in a cache, and how it is compressed. */
export interface NarFileInfo {
  url: string;
  compression: string;
  fileHash?: Hash | undefined;
  fileSize?: number | undefined;
  system?: string | undefined;
}

/**
 * Makes the narinfo of a path from its {@link PathInfo} and the NAR file written for it.
 * `ultimate`, `registrationTime` and `layer` are local facts and are dropped.
 *
 * @example
 * ```ts
 * const ni = pathInfoToNarInfo(info, { url: narFileUrl(fileHash, 'xz'), compression: 'xz', fileHash, fileSize });
 * ```
 */
export function pathInfoToNarInfo(info: PathInfo, file: NarFileInfo): NarInfo {
  const ni: NarInfo = {
    path: info.path,
    narHash: info.narHash,
    narSize: info.narSize,
    references: sortStorePaths(info.references),
    ultimate: false,
    sigs: [...new Set(info.sigs)].sort(),
    url: file.url,
    compression: file.compression,
  };
  if (info.deriver !== undefined) ni.deriver = info.deriver;
  if (info.ca !== undefined) ni.ca = info.ca;
  if (file.fileHash !== undefined) ni.fileHash = file.fileHash;
  if (file.fileSize !== undefined) ni.fileSize = file.fileSize;
  if (file.system !== undefined) ni.system = file.system;
  return ni;
}

/**
 * The {@link PathInfo} part of a narinfo, as a store registers a substituted path: not
 * `ultimate` (it was not built here), and no registration time yet.
 */
export function narInfoToPathInfo(ni: NarInfo): PathInfo {
  const info: PathInfo = {
    path: ni.path,
    narHash: ni.narHash,
    narSize: ni.narSize,
    references: [...ni.references],
    ultimate: false,
    sigs: [...ni.sigs],
  };
  if (ni.deriver !== undefined) info.deriver = ni.deriver;
  if (ni.ca !== undefined) info.ca = ni.ca;
  return info;
}

/** File name extension Nix uses for each compression (`none` → `.nar`). */
export function narFileExtension(compression: string): string {
  switch (compression) {
    case 'none':
      return '.nar';
    case 'xz':
      return '.nar.xz';
    case 'bzip2':
      return '.nar.bz2';
    case 'zstd':
      return '.nar.zst';
    case 'br':
      return '.nar.br';
    case 'lz4':
      return '.nar.lz4';
    case 'lzip':
      return '.nar.lzip';
    default:
      throw new StrataError(
        'UNSUPPORTED',
        `Cannot name a NAR file for compression '${quote(compression)}': unknown method`,
        {
          value: compression,
        },
      );
  }
}

/**
 * The URL Nix gives a NAR file: `nar/<nix32 of sha256(file)><extension>`.
 *
 * @example narFileUrl(fileHash, 'xz') // 'nar/0gjz….nar.xz'
 */
export function narFileUrl(fileHash: Hash, compression: string): string {
  return `nar/${fileHash.toNix32()}${narFileExtension(compression)}`;
}

/** The narinfo file name of a path in a cache: `<hash part>.narinfo`. */
export function narInfoFileName(path: StorePath): string {
  return `${path.hashPart}.narinfo`;
}

/** A `nix-cache-info` is small; 64 KiB is a thousand times what any cache writes. */
const MAX_CACHE_INFO_BYTES = 64 * 1024;

/**
 * Parses `nix-cache-info` as Nix 2.8 does: lines `Key: value`, the value trimmed, lines without
 * a colon and unknown keys ignored. `Priority` must be an integer and `WantMassQuery` `1` or `0`
 * (Nix reads any other value as false; strata rejects it), else `CACHE_INFO_INVALID`.
 *
 * @example parseCacheInfo('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n').priority === 40
 */
export function parseCacheInfo(text: string, whence = 'nix-cache-info'): CacheInfo {
  const fail = (state: string): StrataError =>
    new StrataError('CACHE_INFO_INVALID', `Cannot parse cache info '${quote(whence)}': ${state}`, {
      value: whence,
    });
  if (text.length > MAX_CACHE_INFO_BYTES)
    throw fail(`it is larger than ${MAX_CACHE_INFO_BYTES} bytes`);
  const info: CacheInfo = {};
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const key = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    if (key === 'StoreDir') info.storeDir = value;
    else if (key === 'WantMassQuery') {
      if (value !== '1' && value !== '0')
        throw fail(`WantMassQuery '${quote(value)}' is not 1 or 0`);
      info.wantMassQuery = value === '1';
    } else if (key === 'Priority') {
      if (!/^-?[0-9]{1,9}$/.test(value)) throw fail(`Priority '${quote(value)}' is not an integer`);
      info.priority = Number(value);
    }
  }
  return info;
}

/**
 * Prints `nix-cache-info`: `StoreDir`, `WantMassQuery`, `Priority`, each only when set (`nix copy`
 * writes just the StoreDir line).
 *
 * @example printCacheInfo({ storeDir: '/nix/store' }) === 'StoreDir: /nix/store\n'
 */
export function printCacheInfo(info: CacheInfo): string {
  let out = '';
  if (info.storeDir !== undefined) out += `StoreDir: ${info.storeDir}\n`;
  if (info.wantMassQuery !== undefined) out += `WantMassQuery: ${info.wantMassQuery ? 1 : 0}\n`;
  if (info.priority !== undefined) out += `Priority: ${info.priority}\n`;
  return out;
}
