/**
 * The contract between a binary cache store and where its files live (a directory, an HTTP
 * server). Keys are cache-relative file names (`nix-cache-info`, `<hash>.narinfo`,
 * `nar/<file>`); a transport never interprets them beyond mapping them to its medium.
 */
import type { Readable } from 'node:stream';

/** Reads and writes the files of one binary cache. */
export interface CacheTransport {
  /** The cache's URI without parameters, for messages (`file:///c`, `http://host`). */
  readonly uri: string;
  /** A small file's bytes (narinfo, nix-cache-info), or `undefined` when it does not exist. */
  getFile(key: string): Promise<Buffer | undefined>;
  /**
   * Optional (HTTP): a file read whole, `undefined` when it does not exist, `null` when it is
   * larger than `limit` bytes (not read past them). Small NARs come this way where it is
   * cheaper than a stream.
   */
  getSmall?(key: string, limit: number): Promise<Buffer | null | undefined>;
  /** A file as a stream (NARs), or `undefined` when it does not exist. */
  getStream(key: string): Promise<Readable | undefined>;
  /** Whether a file exists (HTTP: a HEAD request). */
  exists(key: string): Promise<boolean>;
  /**
   * Writes a file so that readers see either nothing or all of it. `size` is known for bodies
   * read from disk, so HTTP can send a Content-Length.
   */
  putFile(key: string, body: Buffer | (() => Readable), contentType: string, size?: number): Promise<void>;
  /**
   * Moves a finished local file into the cache under `key` (a file cache renames it; HTTP
   * uploads it and deletes it). `localPath` must be inside {@link stagingDir}.
   */
  putLocalFile(key: string, localPath: string, contentType: string): Promise<void>;
  /** Where files bound for {@link putLocalFile} are written first. */
  stagingDir(): Promise<string>;
  /** Top-level keys ending in `suffix` (file caches only; HTTP throws `UNSUPPORTED`). */
  list(suffix: string): Promise<string[]>;
  /**
   * Optional (S3): the keys directly under `prefix` (`''` or `nar/`) from at most `maxPages`
   * requests, for answering many "is it there?" questions at once. `through` is set when the
   * listing stopped early: keys after it (in byte order) were not seen.
   */
  listSome?(prefix: string, maxPages: number): Promise<{ keys: string[]; through?: string | undefined }>;
  close(): Promise<void>;
}

/**
 * Most NARs one request to strata serve's `nars/` endpoint names: 86 bytes each (`<path hash>-<NAR
 * hash>`, the served NAR file's name), so the longest request target, ~7.7 KiB, stays under the
 * 8 KiB strata serve accepts.
 */
export const NARS_BATCH = 90;

/** The compressions strata serve offers NARs in, and the suffix of their files and `nars` answers. */
export type ServedCompression = 'none' | 'xz' | 'zstd';
export const SERVED_EXT: Readonly<Record<ServedCompression, string>> = { none: '', xz: '.xz', zstd: '.zst' };

/** Where strata serve offers the NAR of a path: `nar/<path hash>-<NAR hash nix32>.nar[.xz|.zst]`. */
export function servedNarUrl(hashPart: string, narHashNix32: string, compression: ServedCompression): string {
  return `nar/${hashPart}-${narHashNix32}.nar${SERVED_EXT[compression]}`;
}

/** Keys a cache may contain: no traversal, no absolute paths, no odd characters. */
export const CACHE_KEY_RE = /^(?:nix-cache-info|[0-9a-df-np-sv-z]{32}\.narinfo|nar\/[A-Za-z0-9+_-][A-Za-z0-9+._-]{0,199}|closure\/[0-9a-df-np-sv-z]{32}(?:,[0-9a-df-np-sv-z]{32}){0,239}|nars(?:\.zst|\.xz)?\/[0-9a-df-np-sv-z]{32}-[0-9a-df-np-sv-z]{52}(?:,[0-9a-df-np-sv-z]{32}-[0-9a-df-np-sv-z]{52}){0,89}|log\/[A-Za-z0-9+._-]{1,250}|debuginfo\/[0-9a-f]{1,80})$/;
