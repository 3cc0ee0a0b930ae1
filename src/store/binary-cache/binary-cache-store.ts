/**
 * A binary cache (`file://`, `http(s)://`) as a {@link Store}: narinfos and compressed NAR
 * files over a {@link CacheTransport}, in the layout real Nix reads and writes.
 *
 * Reads are verified while they stream: the compressed file against FileHash/FileSize, the NAR
 * against NarHash/NarSize, and a narinfo's StorePath against the path asked for. Writes compress
 * and hash in one pass into a spool (memory, or a staging file when large), upload the NAR first
 * and the narinfo last (so a reader never sees a narinfo whose NAR is missing), and sign with the
 * cache's secret key.
 * Signature *policy* is the destination's business (see `copy.ts`), as in Nix.
 */
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import pLimit from 'p-limit';

import { StrataError } from '../../core/error.js';
import { Hash } from '../../core/hash.js';
import {
  type CacheInfo,
  type NarInfo,
  narFileUrl,
  narInfoFileName,
  parseCacheInfo,
  parseNarInfo,
  pathInfoToNarInfo,
  printCacheInfo,
  printNarInfo,
} from '../../core/narinfo.js';
import { type SecretKey, signPathInfo } from '../../core/signature.js';
import { DEFAULT_STORE_DIR, StoreDir, type StorePath } from '../../core/store-path.js';
import { closureMemberNotValid } from '../closure.js';
import { readAtMost } from '../read-at-most.js';
import type { AddPathOptions, GcResult, OptimiseResult, PathInfo, Store, VerifyResult } from '../store.js';
import { HashingStream } from './hashing-stream.js';
import { DEFAULT_TTL_NEGATIVE, DEFAULT_TTL_POSITIVE, type NarInfoDiskCache } from './narinfo-disk-cache.js';
import { Spool } from './spool.js';
import { type CacheTransport, NARS_BATCH, SERVED_EXT, type ServedCompression, servedNarUrl } from './transport.js';

/** Options for {@link BinaryCacheStore.open}. */
export interface BinaryCacheOptions {
  storeDir?: StoreDir | undefined;
  /** How new NAR files are compressed (default `xz`, as Nix; `zstd` is 20× faster to write). */
  compression?: string | undefined;
  compressionLevel?: number | undefined;
  /** Signs every narinfo written. */
  secretKey?: SecretKey | undefined;
  /** Remembers narinfo lookups across processes (HTTP caches). */
  diskCache?: NarInfoDiskCache | undefined;
  /** `nix-cache-info` already asked for (while the disk cache was being made), used if it knows none. */
  cacheInfoRequest?: Promise<Buffer | undefined> | undefined;
  /** Seconds a found / missing narinfo is remembered (30 days / 3600 s). */
  ttlPositive?: number | undefined;
  ttlNegative?: number | undefined;
  /** Overrides of the cache's own `nix-cache-info`. */
  priority?: number | undefined;
  wantMassQuery?: boolean | undefined;
}

// Loaded on first use (codecs are native addons), then kept: a dynamic import per NAR is a
// module-loader round trip each time (under a loader hook, a message to its worker thread).
let compressionModuleP: Promise<typeof import('../../compression/index.js')> | undefined;
const compressionModule = () => (compressionModuleP ??= import('../../compression/index.js'));

const WRITABLE_COMPRESSIONS = new Set(['none', 'xz', 'zstd', 'br']);
// Below this many unknown paths, narinfo lookups (in parallel) are cheaper than a listing.
const LIST_MIN_PATHS = 8;
// Closure requests name at most this many hash parts (33 bytes each, ~8 KiB of URL).
const CLOSURE_BATCH = 240;
/** NARs the first `nars/` request of a batch names (the others name up to NARS_BATCH). */
const FIRST_NARS_BATCH = 8;

function notValid(store: BinaryCacheStore, path: StorePath, action: string): StrataError {
  const full = store.storeDir.print(path);
  return new StrataError('PATH_NOT_VALID', `Cannot ${action} '${full}': it is not valid in '${store.uri}'`, { value: full });
}

/**
 * The compression strata serve offers the NAR of `ni` in, when its URL is the one strata serve
 * writes for that compression; `undefined` for a NAR offered any other way.
 */
function servedCompression(ni: NarInfo): ServedCompression | undefined {
  const c = ni.compression as ServedCompression;
  return Object.hasOwn(SERVED_EXT, c) && ni.url === servedNarUrl(ni.path.hashPart, ni.narHash.toNix32(), c) ? c : undefined;
}

/**
 * NAR downloads running at once alongside a closure walk: the HTTP transport keeps 8
 * connections, and the walk's own narinfo requests must not queue behind NARs.
 */
const AHEAD_RUNNING = 4;
/** NARs larger than this are not downloaded ahead (the copy streams them). */
const AHEAD_MAX = 1 << 20;

/** The NARs a {@link BinaryCacheStore.prefetchNars} downloads ahead, and its limits. */
class NarsAhead {
  /** Each NAR offered and not yet taken: its download (undefined: skipped), whether it started. */
  readonly #got = new Map<string, { promise: Promise<Uint8Array | undefined>; size: number; started: boolean; taken: boolean }>();
  readonly #running = pLimit(AHEAD_RUNNING);
  #held = 0;
  #stopped = false;

  constructor(
    private readonly wanted: (path: StorePath) => Promise<boolean>,
    private readonly budget: number,
    private readonly fetch: (ni: NarInfo) => Promise<Uint8Array>,
  ) {}

  /** A narinfo just learnt: its NAR is queued when it is small and fits the budget. */
  offer(ni: NarInfo): void {
    const key = ni.path.baseName;
    if (this.#stopped || ni.narSize > AHEAD_MAX || this.#got.has(key) || this.#held + ni.narSize > this.budget) return;
    this.#held += ni.narSize;
    const entry = { promise: Promise.resolve<Uint8Array | undefined>(undefined), size: ni.narSize, started: false, taken: false };
    entry.promise = this.#running(async () => {
      // Taken before its turn (the caller fetched it itself), or stopped: nothing to do.
      if (entry.taken || this.#stopped) return undefined;
      entry.started = true;
      if (await this.wanted(ni.path)) return this.fetch(ni);
      this.#drop(key);
      return undefined;
    });
    entry.promise.catch(() => {}); // its taker sees the failure; an untaken one is dropped
    this.#got.set(key, entry);
  }

  #drop(key: string): void {
    const got = this.#got.get(key);
    if (!got) return;
    this.#got.delete(key);
    this.#held -= got.size;
  }

  /**
   * The download of `path`'s NAR once it started (handed out once, the budget freed; it settles
   * to undefined when the path turned out not wanted), or `undefined`: not offered, or still
   * queued, in which case it is dropped and the caller fetches it now.
   */
  take(path: StorePath): Promise<Uint8Array | undefined> | undefined {
    const key = path.baseName;
    const got = this.#got.get(key);
    if (!got) return undefined;
    this.#drop(key);
    got.taken = true;
    return got.started ? got.promise : undefined;
  }

  stop(): void {
    this.#stopped = true;
    this.#running.clearQueue();
    this.#got.clear();
    this.#held = 0;
  }
}

/** A Nix binary cache. */
export class BinaryCacheStore implements Store {
  readonly uri: string;
  readonly storeDir: StoreDir;
  readonly transport: CacheTransport;
  /** The cache's `nix-cache-info`, with the URI's overrides applied. */
  cacheInfo: CacheInfo;
  /** Whether the server offers strata's `closure/` endpoint (`StrataClosure: 1`). */
  readonly closureEndpoint: boolean;
  /** Present when the server offers strata's `nars/` endpoint (`StrataNars: 1`): see {@link #narBytesMany}. */
  readonly narBytesMany?: (paths: StorePath[]) => Promise<Array<Promise<Uint8Array>>>;
  readonly #options: BinaryCacheOptions;
  /** hashPart → narinfo, or null for "not there"; one lookup per path per process. */
  readonly #narInfos = new Map<string, NarInfo | null>();
  readonly #inFlight = new Map<string, Promise<NarInfo | null>>();
  /** Hash parts whose narinfo a listing showed, not fetched yet. */
  readonly #listed = new Set<string>();
  /** How many paths listings found absent: NAR files this process may be about to write. */
  #listedAbsent = 0;
  /** The NAR files one bounded listing of `nar/` showed, and how far it reached. */
  #narListing: Promise<{ keys: Set<string>; through?: string | undefined }> | undefined;
  /** NAR files this process wrote. */
  readonly #narsWritten = new Set<string>();
  #cacheInfoWritten: boolean;
  /** Closure requests in flight, by request key ({@link prefetchClosure}). */
  readonly #closureFetches = new Map<string, Promise<boolean>>();
  /** NARs downloaded alongside a closure walk ({@link prefetchNars}). */
  #ahead: NarsAhead | undefined;

  private constructor(uri: string, transport: CacheTransport, info: CacheInfo, written: boolean, closure: boolean, nars: boolean, options: BinaryCacheOptions) {
    this.uri = uri;
    this.transport = transport;
    this.storeDir = options.storeDir ?? new StoreDir(DEFAULT_STORE_DIR);
    this.cacheInfo = info;
    this.#cacheInfoWritten = written;
    this.closureEndpoint = closure;
    if (nars) this.narBytesMany = (paths) => this.#narBytesMany(paths);
    this.#options = options;
    const c = options.compression ?? 'xz';
    if (!WRITABLE_COMPRESSIONS.has(c)) {
      throw new StrataError('URI_INVALID', `Cannot use compression '${c}' for '${uri}': strata writes none, xz, zstd or br`, { value: c });
    }
  }

  /**
   * Opens a cache: reads its `nix-cache-info` (from the disk cache when fresh) and refuses a
   * cache whose StoreDir differs from ours, as Nix does.
   *
   * @example const cache = await BinaryCacheStore.open('file:///tmp/c', new FileTransport('/tmp/c'));
   */
  static async open(uri: string, transport: CacheTransport, options: BinaryCacheOptions = {}): Promise<BinaryCacheStore> {
    const storeDir = options.storeDir ?? new StoreDir(DEFAULT_STORE_DIR);
    let text = options.diskCache?.cacheInfo(transport.uri);
    if (text === undefined) {
      text = (await (options.cacheInfoRequest ?? transport.getFile('nix-cache-info')))?.toString('utf8');
      if (text !== undefined) options.diskCache?.rememberCacheInfo(transport.uri, text);
    }
    const info = text === undefined ? {} : parseCacheInfo(text, `${transport.uri}/nix-cache-info`);
    if (info.storeDir !== undefined && info.storeDir !== storeDir.path) {
      throw new StrataError('CACHE_STORE_DIR_MISMATCH', `Cannot use binary cache '${uri}': its store dir '${info.storeDir}' is not '${storeDir.path}'`, { value: uri });
    }
    if (options.priority !== undefined) info.priority = options.priority;
    if (options.wantMassQuery !== undefined) info.wantMassQuery = options.wantMassQuery;
    const closure = text !== undefined && /^StrataClosure: 1$/m.test(text);
    const nars = text !== undefined && /^StrataNars: 1$/m.test(text);
    return new BinaryCacheStore(uri, transport, info, text !== undefined, closure, nars, options);
  }

  /**
   * Lower is preferred. Nix 2.8's default is 0 (its store setting), so a cache that names no
   * Priority (what `nix copy --to file://` writes) comes before cache.nixos.org's 40.
   */
  get priority(): number {
    return this.cacheInfo.priority ?? 0;
  }

  // ---------------------------------------------------------------------------------------------
  // Reading.

  /** The narinfo of `path`, or `undefined`; remembered per process (and on disk for HTTP). */
  async queryNarInfo(path: StorePath): Promise<NarInfo | undefined> {
    const ni = await this.#lookup(path.hashPart);
    if (ni && ni.path.baseName !== path.baseName) {
      // Same hash part, other name: the cache is lying or broken. Nix: "has a wrong store path".
      throw new StrataError('NARINFO_MISMATCH', `Cannot use narinfo '${this.transport.uri}/${narInfoFileName(path)}': its StorePath '${this.storeDir.print(ni.path)}' is not '${this.storeDir.print(path)}'`, {
        value: this.storeDir.print(path),
      });
    }
    return ni ?? undefined;
  }

  #lookup(hashPart: string): Promise<NarInfo | null> {
    const known = this.#narInfos.get(hashPart);
    if (known !== undefined) return Promise.resolve(known);
    let p = this.#inFlight.get(hashPart);
    if (!p) {
      p = this.#fetchNarInfo(hashPart).finally(() => this.#inFlight.delete(hashPart));
      this.#inFlight.set(hashPart, p);
    }
    return p;
  }

  async #fetchNarInfo(hashPart: string): Promise<NarInfo | null> {
    const key = `${hashPart}.narinfo`;
    const disk = this.#options.diskCache;
    const ttlPos = this.#options.ttlPositive ?? DEFAULT_TTL_POSITIVE;
    const ttlNeg = this.#options.ttlNegative ?? DEFAULT_TTL_NEGATIVE;
    let text: string | null | undefined;
    const cached = disk?.lookup(this.transport.uri, hashPart, ttlPos, ttlNeg);
    if (cached !== undefined) text = cached === null ? null : cached.text;
    else {
      const bytes = await this.transport.getFile(key);
      text = bytes === undefined ? null : bytes.toString('utf8');
      if (bytes !== undefined) {
        // Parse before remembering: a broken narinfo must not be cached for 30 days.
        this.#parse(text!, hashPart);
      }
      disk?.remember(this.transport.uri, hashPart, text);
    }
    const ni = text === null ? null : this.#parse(text, hashPart);
    this.#narInfos.set(hashPart, ni);
    if (ni) this.#ahead?.offer(ni);
    return ni;
  }

  #parse(text: string, hashPart: string): NarInfo {
    const whence = `${this.transport.uri}/${hashPart}.narinfo`;
    const ni = parseNarInfo(text, { storeDir: this.storeDir, whence });
    if (ni.path.hashPart !== hashPart) {
      throw new StrataError('NARINFO_MISMATCH', `Cannot use narinfo '${whence}': its StorePath '${this.storeDir.print(ni.path)}' has another hash part`, { value: whence });
    }
    return ni;
  }

  /**
   * Fetches the narinfos of the closures of `paths` in one request per 240 paths when the
   * server offers strata's closure endpoint; otherwise does nothing. Later lookups of those
   * paths are then answered from memory. A request already in flight for the same paths is
   * shared, so a caller may start one early (the copy command does, while the destination
   * store opens) and the copy's own call waits for it.
   */
  async prefetchClosure(paths: StorePath[]): Promise<void> {
    if (!this.closureEndpoint) return;
    const todo = paths.filter((p) => !this.#narInfos.has(p.hashPart));
    for (let i = 0; i < todo.length; i += CLOSURE_BATCH) {
      const key = `closure/${todo.slice(i, i + CLOSURE_BATCH).map((p) => p.hashPart).join(',')}`;
      let fetching = this.#closureFetches.get(key);
      if (!fetching) {
        fetching = this.#fetchClosure(key).finally(() => this.#closureFetches.delete(key));
        this.#closureFetches.set(key, fetching);
      }
      if (!(await fetching)) return;
    }
  }

  /** One closure request into the memo; false when the server did not answer it. */
  async #fetchClosure(key: string): Promise<boolean> {
    const body = await this.transport.getFile(key).catch(() => undefined);
    if (!body) return false;
    // Narinfos separated by empty lines, each cut with its final '\n' (a slice, not a copy).
    const text = body.toString('utf8');
    for (let start = 0; start < text.length; ) {
      const gap = text.indexOf('\n\n', start);
      const end = gap < 0 ? text.length : gap + 1;
      const part = text.endsWith('\n', end) ? text.slice(start, end) : `${text.slice(start, end)}\n`;
      start = end + 1;
      const hashPart = /^StorePath: [^\n]*\/([0-9a-z]{32})-/.exec(part)?.[1];
      if (hashPart) this.#narInfos.set(hashPart, this.#parse(part, hashPart));
    }
    return true;
  }

  /**
   * The closure of `paths`, walked in memory through the narinfos already known (a closure
   * request brings them all); the ones not known yet are fetched a level at a time, as the
   * generic walk does. The generic walk's promise per member was ~15 ms of a 300-path chain.
   */
  async queryClosure(paths: StorePath[]): Promise<PathInfo[]> {
    await this.prefetchClosure(paths);
    const roots = new Set(paths.map((p) => p.baseName));
    const seen = new Map<string, PathInfo>();
    let frontier = paths;
    while (frontier.length > 0) {
      const unknown: StorePath[] = [];
      const stack = [...frontier];
      while (stack.length > 0) {
        const p = stack.pop()!;
        const base = p.baseName;
        if (seen.has(base)) continue;
        const known = this.#narInfos.get(p.hashPart);
        // Unknown, or known under another name (queryNarInfo reports that mismatch).
        if (known === undefined || (known !== null && known.path.baseName !== base)) unknown.push(p);
        else if (known !== null) {
          seen.set(base, known);
          for (const r of known.references) if (!seen.has(r.baseName)) stack.push(r);
        } else if (!roots.has(base)) throw closureMemberNotValid(this, p);
      }
      // Each lookup leaves its answer in the memo, so the next round walks on from there.
      await Promise.all(unknown.map((p) => this.queryNarInfo(p)));
      frontier = unknown;
    }
    return [...seen.values()];
  }

  async queryPathInfo(path: StorePath): Promise<PathInfo | undefined> {
    return this.queryNarInfo(path);
  }

  async isValidPath(path: StorePath): Promise<boolean> {
    const known = this.#narInfos.get(path.hashPart);
    if (known !== undefined) return known !== null && known.path.baseName === path.baseName;
    if (this.#listed.has(path.hashPart)) return true;
    return (await this.queryNarInfo(path)) !== undefined;
  }

  async queryValidPaths(paths: StorePath[]): Promise<StorePath[]> {
    await this.#listNarInfos(paths);
    const valid = await Promise.all(paths.map((p) => this.isValidPath(p)));
    return paths.filter((_, i) => valid[i]);
  }

  /**
   * Many unknown paths at once (a push asking what the bucket already has), on a transport that
   * can list: one listing request answers up to 1,000 of them where a narinfo lookup costs one
   * request each. Validity is then the narinfo file's existence, as Nix's fileExists check. The
   * listing reads at most one page per 100 paths asked, so a bucket far larger than the question
   * costs at most 1 % more requests; what the listing did not reach is looked up as before.
   */
  async #listNarInfos(paths: StorePath[]): Promise<void> {
    if (!this.transport.listSome) return;
    const unknown = paths.filter((p) => !this.#narInfos.has(p.hashPart) && !this.#listed.has(p.hashPart));
    if (unknown.length < LIST_MIN_PATHS) return;
    // A listing refused (an S3 key without s3:ListBucket) or failed costs nothing but itself:
    // the paths are then looked up one by one, as without a listing.
    const listing = await this.transport.listSome('', Math.ceil(unknown.length / 100)).catch(() => undefined);
    if (!listing) return;
    const { keys, through } = listing;
    const present = new Set(keys.filter((k) => k.endsWith('.narinfo')).map((k) => k.slice(0, -'.narinfo'.length)));
    for (const p of unknown) {
      if (through !== undefined && `${p.hashPart}.narinfo` > through) continue;
      if (present.has(p.hashPart)) this.#listed.add(p.hashPart);
      else {
        this.#narInfos.set(p.hashPart, null);
        this.#listedAbsent++;
      }
    }
  }

  async queryAllValidPaths(): Promise<StorePath[]> {
    const names = await this.transport.list('.narinfo');
    const out: StorePath[] = [];
    for (const name of names) {
      const ni = await this.#lookup(name.slice(0, -'.narinfo'.length)).catch(() => null);
      if (ni) out.push(ni.path);
    }
    return out;
  }

  async queryReferrers(_path: StorePath): Promise<StorePath[]> {
    throw this.#unsupported('query referrers');
  }

  async queryValidDerivers(path: StorePath): Promise<StorePath[]> {
    const ni = await this.queryNarInfo(path);
    return ni?.deriver ? [ni.deriver] : [];
  }

  async queryDerivationOutputs(_drvPath: StorePath): Promise<Map<string, StorePath>> {
    return new Map();
  }

  async queryPathFromHashPart(hashPart: string): Promise<StorePath | undefined> {
    if (!/^[0-9a-df-np-sv-z]{32}$/.test(hashPart)) return undefined;
    return (await this.#lookup(hashPart))?.path;
  }

  /**
   * Streams the NAR of a path, decompressed, failing with `HASH_MISMATCH`/`SIZE_MISMATCH` (or
   * `COMPRESSION_INVALID`) at the end when the bytes are not the ones the narinfo declares.
   * Consumers must not make anything valid before the stream ended without error.
   */
  async narFromPath(path: StorePath): Promise<Readable> {
    const ni = await this.queryNarInfo(path);
    if (!ni) throw notValid(this, path, 'read');
    return this.narFromNarInfo(ni);
  }

  /**
   * The NAR of a path in memory, verified. An uncompressed NAR file (what strata serve sends
   * with `--compression none`, and a `compression=none` cache holds) is read as it comes and
   * hashed once: the stream stages of {@link narFromPath} (a pipeline, two pass-throughs and
   * their abort signals, per path) cost more than a small NAR's bytes.
   */
  async narBytes(path: StorePath): Promise<Uint8Array> {
    const ahead = await this.#ahead?.take(path);
    if (ahead) return ahead;
    const ni = await this.queryNarInfo(path);
    if (!ni) throw notValid(this, path, 'read');
    return this.#narBytesOf(ni);
  }

  /**
   * While a closure is walked narinfo by narinfo (a cache without strata's closure endpoint:
   * along a chain, one request per level), downloads the small NARs of the paths found so far
   * alongside, for {@link narBytes} to hand out later: the NARs then arrive during the walk
   * instead of after it. Only paths `wanted` says yes to (those the destination lacks), at most
   * {@link AHEAD_RUNNING} downloads at once (the walk keeps connections of its own), and at most
   * `budget` bytes held until they are taken. Returns a function that stops it and drops what
   * was not taken.
   */
  prefetchNars(wanted: (path: StorePath) => Promise<boolean>, budget: number): () => void {
    const ahead = new NarsAhead(wanted, budget, (ni) => this.#narBytesOf(ni));
    this.#ahead = ahead;
    return () => {
      if (this.#ahead === ahead) this.#ahead = undefined;
      ahead.stop();
    };
  }

  async #narBytesOf(ni: NarInfo): Promise<Uint8Array> {
    if (!this.#fileIsNar(ni)) return Buffer.concat(await (await this.narFromNarInfo(ni)).toArray());
    const full = this.storeDir.print(ni.path);
    const url = ni.url.replace(/^\.\//, '');
    // A hostile cache cannot make us hold more than declared.
    const file = await this.#fileAtMost(url, ni.narSize).catch((e: unknown) => {
      throw this.#badUrl(e, ni, full);
    });
    if (file === undefined) throw this.#narMissing(full, url);
    if (file === null) throw this.#mismatch(full, 'File')('size', `more than ${ni.narSize} bytes`);
    if (file.length !== ni.narSize) throw this.#mismatch(full, 'File')('size', String(file.length));
    const hash = Hash.of('sha256', file);
    if (!hash.equals(ni.fileHash!)) throw this.#mismatch(full, 'File')('hash', hash.toNix32());
    return file;
  }

  /** A file of at most `limit` bytes read whole: `undefined` when missing, `null` when larger. */
  async #fileAtMost(key: string, limit: number): Promise<Buffer | null | undefined> {
    if (this.transport.getSmall) return this.transport.getSmall(key, limit);
    const stream = await this.transport.getStream(key);
    return stream && ((await readAtMost(stream, limit)) ?? null);
  }

  /**
   * `Store.narBytesMany` from a server with strata's `nars/` endpoint: the NARs strata serve
   * names in its narinfos come back to back (as one compressed stream, `nars.zst/` or
   * `nars.xz/`, when its narinfos offer compressed NARs), up to {@link NARS_BATCH} per request
   * (all requests at once, on the transport's connections), and are cut apart by their NarSize;
   * any other path, or a request refused (a path gone or changed since its narinfo), is read with
   * {@link narBytes}.
   */
  async #narBytesMany(paths: StorePath[]): Promise<Array<Promise<Uint8Array>>> {
    const infos = await Promise.all(
      paths.map(async (p) => {
        const ni = await this.queryNarInfo(p);
        if (!ni) throw notValid(this, p, 'read');
        return ni;
      }),
    );
    const out: Array<Promise<Uint8Array>> = new Array(paths.length);
    // By the compression strata serve offers them in: `nars/`, `nars.zst/` or `nars.xz/`.
    const batched = new Map<ServedCompression, number[]>();
    infos.forEach((ni, i) => {
      const kind = servedCompression(ni);
      if (kind === undefined || (kind === 'none' && !this.#fileIsNar(ni))) out[i] = this.narBytes(paths[i]!);
      else {
        const list = batched.get(kind);
        if (list) list.push(i);
        else batched.set(kind, [i]);
      }
    });
    for (const [kind, list] of batched) {
      // The first request names only a few NARs: the server answers it at once, so restoring
      // starts while it reads the rest (first NAR 7-9 ms after the batch was set up, against
      // 11-17 ms when the first request also named 90; the 300-path chain ended ~20 ms sooner).
      for (let start = 0, size = FIRST_NARS_BATCH; start < list.length; start += size, size = NARS_BATCH) {
        const group = list.slice(start, start + size);
        const settle = group.map((i) => {
          let resolve!: (b: Uint8Array) => void;
          let reject!: (e: unknown) => void;
          out[i] = new Promise<Uint8Array>((res, rej) => ((resolve = res), (reject = rej)));
          return { resolve, reject };
        });
        const fallback = () => group.forEach((i, k) => this.narBytes(paths[i]!).then(settle[k]!.resolve, settle[k]!.reject));
        this.#readNars(group.map((i) => infos[i]!), settle, kind).then(
          (refused) => refused && fallback(),
          (e: unknown) => settle.forEach((s) => s.reject(e)),
        );
      }
    }
    // Marked handled: a NAR may fail before its reader gets to it (the reader still sees why).
    for (const p of out) p.catch(() => {});
    return out;
  }

  /**
   * Reads one `nars/` answer into the NARs of `infos`, settling each as its last byte arrives;
   * `true` when the server refused the request (404), so the caller reads them one by one.
   */
  async #readNars(infos: NarInfo[], settle: Array<{ resolve: (b: Uint8Array) => void; reject: (e: unknown) => void }>, kind: ServedCompression): Promise<boolean> {
    const key = `nars${SERVED_EXT[kind]}/${infos.map((ni) => `${ni.path.hashPart}-${ni.narHash.toNix32()}`).join(',')}`;
    const answer = await this.transport.getStream(key);
    if (!answer) return true;
    let stream: Readable = answer;
    if (kind !== 'none') {
      // A bad stream fails the read below with COMPRESSION_INVALID; what is read is cut by
      // NarSize as before, so no more than the NARs asked for is ever held.
      const { decompressor } = await compressionModule();
      const unpacked = decompressor(kind);
      pipeline(answer, unpacked).catch(() => {});
      stream = unpacked;
    }
    let i = 0;
    let parts: Buffer[] = [];
    let have = 0;
    /** Settles NAR `i` from its bytes; false when it failed (the rest of the answer is then off). */
    const finish = (bytes: Buffer): boolean => {
      const ni = infos[i]!;
      const hash = Hash.of('sha256', bytes);
      if (!hash.equals(ni.narHash)) {
        settle[i]!.reject(this.#mismatch(this.storeDir.print(ni.path), 'Nar')('hash', hash.toNix32()));
        return false;
      }
      settle[i++]!.resolve(bytes);
      return true;
    };
    const failRest = (why: string) => {
      for (; i < infos.length; i++) {
        const full = this.storeDir.print(infos[i]!.path);
        settle[i]!.reject(new StrataError('SIZE_MISMATCH', `Cannot read '${full}' from '${this.uri}': ${why}`, { value: full }));
      }
    };
    try {
      for await (const c of stream) {
        const chunk = c as Buffer;
        for (let off = 0; off < chunk.length; ) {
          if (i >= infos.length) {
            // Every NAR is in and verified: bytes past them are the server's problem, not ours.
            stream.destroy();
            return false;
          }
          const need = infos[i]!.narSize - have;
          const take = Math.min(need, chunk.length - off);
          const piece = chunk.subarray(off, off + take);
          off += take;
          if (take < need) {
            parts.push(piece);
            have += take;
            continue;
          }
          // A NAR inside one chunk is a view of it: no copy, no allocation.
          const bytes = have === 0 ? piece : Buffer.concat([...parts, piece]);
          parts = [];
          have = 0;
          if (!finish(bytes)) {
            stream.destroy();
            failRest('an earlier NAR of the same answer did not match its narinfo');
            return false;
          }
        }
      }
    } catch (e) {
      // A cut connection (the server found a NAR of another size) fails what is not in yet.
      if (e instanceof StrataError) throw e;
      const why = `the answer was cut short (${(e as Error).message})`;
      for (; i < infos.length; i++) {
        const full = this.storeDir.print(infos[i]!.path);
        settle[i]!.reject(new StrataError('HTTP_ERROR', `Cannot read '${full}' from '${this.uri}': ${why}`, { value: full, cause: e }));
      }
      return false;
    }
    if (i < infos.length) {
      settle[i]!.reject(this.#mismatch(this.storeDir.print(infos[i]!.path), 'Nar')('size', `${have} bytes`));
      i++;
      failRest('the answer ended early');
    }
    return false;
  }

  /** Uncompressed, with FileHash/FileSize equal to NarHash/NarSize (what Nix and strata write). */
  #fileIsNar(ni: NarInfo): boolean {
    return ni.compression === 'none' && ni.fileHash !== undefined && ni.fileHash.equals(ni.narHash) && ni.fileSize === ni.narSize;
  }

  #badUrl(e: unknown, ni: NarInfo, full: string): unknown {
    if (e instanceof StrataError && e.code === 'CACHE_KEY_INVALID') {
      return new StrataError('NARINFO_INVALID', `Cannot read '${full}' from '${this.uri}': its URL '${ni.url}' is not a NAR file of this cache`, { value: ni.url });
    }
    return e;
  }

  #narMissing(full: string, url: string): StrataError {
    return new StrataError('NAR_MISSING', `Cannot read '${full}' from '${this.uri}': its NAR file '${url}' does not exist`, { value: url });
  }

  #mismatch(full: string, field: string): (what: 'hash' | 'size', got: string) => StrataError {
    return (what, got) =>
      new StrataError(what === 'hash' ? 'HASH_MISMATCH' : 'SIZE_MISMATCH', `Cannot read '${full}' from '${this.uri}': ${field}${what === 'hash' ? 'Hash' : 'Size'} mismatch, got ${got}`, { value: full });
  }

  /** As {@link narFromPath}, for a narinfo already in hand. */
  async narFromNarInfo(ni: NarInfo): Promise<Readable> {
    const { decompressor } = await compressionModule();
    const full = this.storeDir.print(ni.path);
    const url = ni.url.replace(/^\.\//, '');
    const mismatch = (field: string) => this.#mismatch(full, field);
    // The stages first: a compression strata cannot read fails here, before a file is opened
    // that nothing would then close (a descriptor left to the garbage collector).
    const stages: NodeJS.ReadWriteStream[] = [];
    if (ni.fileHash !== undefined || ni.fileSize !== undefined) stages.push(new HashingStream({ hash: ni.fileHash, size: ni.fileSize, fail: mismatch('File') }));
    // When the file is the NAR, the file check already is the NAR check: the bytes are hashed
    // once, not twice.
    if (!this.#fileIsNar(ni)) {
      stages.push(decompressor(ni.compression));
      stages.push(new HashingStream({ hash: ni.narHash, size: ni.narSize, fail: mismatch('Nar') }));
    }
    const file = await this.transport.getStream(url).catch((e: unknown) => {
      throw this.#badUrl(e, ni, full);
    });
    if (!file) throw this.#narMissing(full, url);
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    // pipeline() destroys every stage with the first error, `out` included, so the consumer sees it.
    pipeline([file, ...stages, out]).catch(() => {});
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // Writing.

  async #ensureCacheInfo(): Promise<void> {
    if (this.#cacheInfoWritten) return;
    this.cacheInfo.storeDir ??= this.storeDir.path;
    await this.transport.putFile('nix-cache-info', Buffer.from(printCacheInfo({ storeDir: this.storeDir.path })), 'text/x-nix-cache-info');
    this.#cacheInfoWritten = true;
  }

  /**
   * Adds a path: compresses the NAR while hashing it (NarHash/NarSize checked against `info`,
   * FileHash/FileSize computed), uploads the NAR file, then the signed narinfo. Every reference
   * must already be in the cache (as Nix 2.8 requires). Nothing is published on a mismatch.
   */
  async addFromNar(info: PathInfo, nar: Readable): Promise<void> {
    const full = this.storeDir.print(info.path);
    const others = info.references.filter((r) => !r.equals(info.path));
    const valid = await this.queryValidPaths(others);
    if (valid.length !== others.length) {
      nar.destroy();
      const missing = others.find((r) => !valid.some((v) => v.equals(r)))!;
      throw new StrataError('REFERENCE_INVALID', `Cannot add '${full}' to '${this.uri}': its reference '${this.storeDir.print(missing)}' is not in the cache`, { value: this.storeDir.print(missing) });
    }
    if (await this.isValidPath(info.path)) {
      nar.resume();
      return;
    }
    await this.#ensureCacheInfo();
    const compression = this.#options.compression ?? 'xz';
    const { compressor } = await compressionModule();
    // Uncompressed, the file is the NAR: FileHash/FileSize are NarHash/NarSize (checked while the
    // NAR streams; no second hash), and its key is known before the first byte, so whether the
    // file is already there (another writer's NAR whose narinfo is not up yet) is asked while
    // the NAR is read rather than after it: one round trip fewer per path.
    const plain = compression === 'none';
    const plainUrl = plain ? narFileUrl(info.narHash, compression) : undefined;
    const present = plainUrl === undefined ? undefined : this.#narFileExists(plainUrl);
    present?.catch(() => {}); // awaited below, or dropped when the NAR turns out bad
    const narStage = new HashingStream({
      size: info.narSize,
      hash: info.narHash,
      fail: (what, got) =>
        new StrataError(what === 'hash' ? 'HASH_MISMATCH' : 'SIZE_MISMATCH', `Cannot add '${full}' to '${this.uri}': NAR ${what} mismatch, declared ${what === 'hash' ? info.narHash.toNix32() : info.narSize}, got ${got}`, { value: full }),
    });
    const fileStage = plain ? undefined : new HashingStream();
    const spool = new Spool(await this.transport.stagingDir());
    try {
      if (fileStage) await pipeline(nar, narStage, compressor(compression, { level: this.#options.compressionLevel, nix: true }), fileStage, spool);
      else await pipeline(nar, narStage, spool);
      const fileHash: Hash = fileStage ? fileStage.hash : info.narHash;
      const url = plainUrl ?? narFileUrl(fileHash, compression);
      if (!(await (present ?? this.#narFileExists(url)))) {
        await spool.upload(this.transport, url, 'application/x-nix-nar');
        this.#narsWritten.add(url);
      }
      let ni = pathInfoToNarInfo(info, { url, compression, fileHash, fileSize: spool.size });
      if (this.#options.secretKey) ni = signPathInfo(this.storeDir, ni, this.#options.secretKey);
      await this.#writeNarInfo(ni);
    } finally {
      await spool.dispose();
    }
  }

  /**
   * Whether a NAR file is in the cache. Once a listing found many paths absent (a push of a
   * closure), one bounded listing of `nar/` answers for all of their NAR files where a HEAD
   * costs a request each; a file past what it reached gets its HEAD. A NAR file written since
   * the listing by another writer may be written again: same key, same bytes.
   */
  #narFileExists(url: string): Promise<boolean> {
    if (this.#narsWritten.has(url)) return Promise.resolve(true);
    if (!this.transport.listSome || this.#listedAbsent < LIST_MIN_PATHS) return this.transport.exists(url);
    // A failed listing reached nothing (`through: ''`): every file then gets its HEAD.
    this.#narListing ??= this.transport.listSome('nar/', Math.ceil(this.#listedAbsent / 100)).then(
      ({ keys, through }) => ({ keys: new Set(keys), through }),
      () => ({ keys: new Set<string>(), through: '' }),
    );
    return this.#narListing.then((l) => (l.through === undefined || url <= l.through ? l.keys.has(url) : this.transport.exists(url)));
  }

  async #writeNarInfo(ni: NarInfo): Promise<void> {
    const text = printNarInfo(ni, this.storeDir);
    await this.transport.putFile(narInfoFileName(ni.path), Buffer.from(text), 'text/x-nix-narinfo');
    this.#narInfos.set(ni.path.hashPart, ni);
    this.#options.diskCache?.remember(this.transport.uri, ni.path.hashPart, text);
  }

  async addPath(fsPath: string, options: AddPathOptions = {}): Promise<PathInfo> {
    const { basename } = await import('node:path');
    const { hashPath, hashFile } = await import('../../fs/hash-path.js');
    const { dumpPath } = await import('../../fs/nar-dump.js');
    const { printContentAddress } = await import('../../core/content-address.js');
    const method = options.method ?? 'recursive';
    const algo = options.hashAlgo ?? 'sha256';
    const name = options.name ?? basename(fsPath);
    const nar = await hashPath(fsPath, 'sha256');
    const caHash = method === 'recursive' ? (algo === 'sha256' ? nar.hash : (await hashPath(fsPath, algo)).hash) : await hashFile(fsPath, algo);
    const references = options.references ?? [];
    const path = this.storeDir.makeFixedOutputPath(name, caHash, method === 'recursive', references);
    const info: PathInfo = { path, narHash: nar.hash, narSize: nar.narSize, references, ultimate: false, sigs: [], ca: printContentAddress({ method, hash: caHash }) };
    await this.addFromNar(info, dumpPath(fsPath));
    return (await this.queryPathInfo(path)) ?? info;
  }

  async addText(name: string, text: string | Uint8Array, references: StorePath[]): Promise<PathInfo> {
    const { Hash } = await import('../../core/hash.js');
    const { encodeNar } = await import('../../core/nar/writer.js');
    const { Readable } = await import('node:stream');
    const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : Buffer.from(text);
    const path = this.storeDir.makeTextPath(name, Hash.of('sha256', bytes), references);
    const chunks: Uint8Array[] = [];
    for await (const c of encodeNar({ type: 'regular', executable: false, size: bytes.length, contents: [bytes] })) chunks.push(c);
    const narBytes = Buffer.concat(chunks);
    const info: PathInfo = { path, narHash: Hash.of('sha256', narBytes), narSize: narBytes.length, references, ultimate: false, sigs: [], ca: `text:sha256:${Hash.of('sha256', bytes).toNix32()}` };
    await this.addFromNar(info, Readable.from([narBytes]));
    return (await this.queryPathInfo(path)) ?? info;
  }

  async addSignatures(path: StorePath, sigs: string[]): Promise<void> {
    const ni = await this.queryNarInfo(path);
    if (!ni) throw notValid(this, path, 'sign');
    await this.#writeNarInfo({ ...ni, sigs: [...new Set([...ni.sigs, ...sigs])].sort() });
  }

  #unsupported(action: string): StrataError {
    return new StrataError('UNSUPPORTED', `Cannot ${action} in '${this.uri}': binary caches do not support it`, { value: this.uri });
  }

  async deletePaths(_paths: StorePath[]): Promise<GcResult> {
    throw this.#unsupported('delete paths');
  }
  async collectGarbage(): Promise<GcResult> {
    throw this.#unsupported('collect garbage');
  }
  async verify(): Promise<VerifyResult> {
    throw this.#unsupported('verify the store');
  }
  async optimise(): Promise<OptimiseResult> {
    throw this.#unsupported('optimise');
  }

  async close(): Promise<void> {
    await this.transport.close();
    this.#options.diskCache?.close();
  }
}
