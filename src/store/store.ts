/**
 * The `Store` contract every backend implements: the local store, binary caches and the layered
 * store (which holds an upper and lowers, all reached only through this contract).
 *
 * Bytes always travel as streams: no backend reads a whole NAR into memory.
 */
import type { Readable } from 'node:stream';

import type { Hash } from '../core/hash.js';
import type { StoreDir, StorePath } from '../core/store-path.js';

/** What a store knows about one valid path (a `ValidPaths` row, a narinfo). */
export interface PathInfo {
  path: StorePath;
  /** sha256 of the NAR serialisation. */
  narHash: Hash;
  narSize: number;
  /** Sorted by base name; a self-reference is included. */
  references: StorePath[];
  deriver?: StorePath | undefined;
  /** Unix seconds. */
  registrationTime?: number | undefined;
  /** Built locally (`ultimate` 1 in the DB). */
  ultimate: boolean;
  /** `keyname:base64` signatures. */
  sigs: string[];
  /** Content address in Nix's text form (`fixed:r:sha256:<nix32>`, `text:sha256:…`). */
  ca?: string | undefined;
  /** Which layer answered, for layered stores (e.g. `upper`, `lower:0`); absent elsewhere. */
  layer?: string | undefined;
}

/** How `addPath` hashes a file system object. */
export interface AddPathOptions {
  /** Store path name (default: the file's base name). */
  name?: string;
  /** `recursive` (NAR, the default) or `flat` (a regular file's bytes). */
  method?: 'recursive' | 'flat';
  /** Hash algorithm of the content address (default sha256). */
  hashAlgo?: 'md5' | 'sha1' | 'sha256' | 'sha512';
  references?: StorePath[];
}

export interface GcOptions {
  /** Stop once this many bytes were freed. */
  maxFreed?: number;
  /** Report, but delete nothing. */
  dryRun?: boolean;
  /** `live` or `dead`: which set to report (with dryRun). */
  print?: 'live' | 'dead';
}

export interface GcResult {
  deleted: StorePath[];
  bytesFreed: number;
  /** With `print`, the paths in the asked set. */
  paths?: StorePath[];
}

export interface VerifyOptions {
  checkContents?: boolean;
  repair?: boolean;
}

export interface VerifyResult {
  /** Paths whose contents no longer match their recorded hash. */
  modified: StorePath[];
  /** DB rows whose files are gone. */
  missing: StorePath[];
  repaired: StorePath[];
  ok: boolean;
}

export interface OptimiseResult {
  filesLinked: number;
  bytesSaved: number;
}

/** A store of Nix paths. Methods a backend cannot support throw `UNSUPPORTED`. */
export interface Store {
  /** The URI this store was opened with, normalised. */
  readonly uri: string;
  readonly storeDir: StoreDir;

  queryPathInfo(path: StorePath): Promise<PathInfo | undefined>;
  isValidPath(path: StorePath): Promise<boolean>;
  /** The subset of `paths` that is valid. */
  queryValidPaths(paths: StorePath[]): Promise<StorePath[]>;
  queryAllValidPaths(): Promise<StorePath[]>;
  queryReferrers(path: StorePath): Promise<StorePath[]>;
  /** The derivations known to produce `path` (the `deriver` plus `DerivationOutputs` rows). */
  queryValidDerivers(path: StorePath): Promise<StorePath[]>;
  /** Output name → path, from `DerivationOutputs`. */
  queryDerivationOutputs(drvPath: StorePath): Promise<Map<string, StorePath>>;
  queryPathFromHashPart(hashPart: string): Promise<StorePath | undefined>;
  /**
   * Optional: the closure of `paths` under references as path infos, the same infos
   * `queryPathInfo` gives, in any order; start paths that are not valid are left out. Backends
   * with a database answer in a few batched queries where the generic walk in `computeClosure`
   * (which uses this when present) needs a round trip per member: 70,000 of them for a
   * 5,000-path set in a million-path store (bench/layered.ts (a)).
   */
  queryClosure?(paths: StorePath[]): Promise<PathInfo[]>;
  /**
   * Optional: a value that differs after any change to the store's valid paths (by any
   * process), read without a query, or `undefined` when the backend cannot tell cheaply. While
   * it stays equal, answers derived from the store still hold (`strata serve` skips re-checking
   * memoised narinfos).
   */
  changeToken?(): Buffer | undefined;

  /**
   * Optional, for remote stores: fetches the narinfos of the closures of `paths` ahead, in as few
   * requests as the server allows (strata serve's `closure/` endpoint), so that the walk that
   * follows is answered from memory; does nothing when the server cannot. `copyPaths -r` and
   * substitution call it first.
   */
  prefetchClosure?(paths: StorePath[]): Promise<void>;
  /**
   * Optional, for remote stores walked narinfo by narinfo: from now on, downloads the small NARs
   * of the paths the walk finds and `wanted` says yes to, while the walk goes on, holding at most
   * `budget` bytes until {@link narBytes} takes them. Returns a function that stops it.
   */
  prefetchNars?(wanted: (path: StorePath) => Promise<boolean>, budget: number): () => void;

  /** Streams the NAR serialisation of a valid path. */
  narFromPath(path: StorePath): Promise<Readable>;
  /**
   * Optional: the whole NAR of a valid path in memory, verified as {@link narFromPath}'s stream
   * is, for small paths (callers keep to NARs of at most 1 MiB): a binary cache answers it with
   * one read and one hash, no stream stages per path.
   */
  narBytes?(path: StorePath): Promise<Uint8Array>;
  /**
   * Optional, only on sources that fetch many small NARs in one request (a binary cache served
   * by `strata serve`, with its `nars/` endpoint): the NARs of `paths`, each verified as by
   * {@link narBytes}, one promise per path in order, each settling once its own bytes are in.
   * Everything asked for is held until its promise is consumed, so callers ask window by window.
   */
  narBytesMany?(paths: StorePath[]): Promise<Array<Promise<Uint8Array>>>;

  /**
   * Adds a path from its NAR and declared info. The NAR's hash and size are verified against
   * `info` before the path becomes valid; nothing is left behind when they differ.
   */
  addFromNar(info: PathInfo, nar: Readable): Promise<void>;
  /**
   * Optional: adds many paths from their NARs at once, each verified as by {@link addFromNar},
   * all registered in one transaction (as Nix's `registerValidPaths`), so a batch may hold a
   * path and its references in any order; references outside the batch must be valid already.
   * All or nothing: if one NAR fails, no path of the batch becomes valid. Paths already valid
   * are skipped without opening their NARs. `copyItems` (src/store/copy.ts) uses it when the
   * destination has it, and adds path by path through `addFromNar` otherwise.
   */
  addFromNars?(items: NarSource[], options?: AddNarsOptions): Promise<void>;
  /** Adds a file system object (like `nix-store --add`/`--add-fixed`). */
  addPath(fsPath: string, options?: AddPathOptions): Promise<PathInfo>;
  /** Adds a text file (like `builtins.toFile`, and `.drv` files). */
  addText(name: string, text: string | Uint8Array, references: StorePath[]): Promise<PathInfo>;
  /** Adds `keyname:base64` signatures to a valid path. */
  addSignatures(path: StorePath, sigs: string[]): Promise<void>;

  /** Deletes paths that nothing alive refers to; refuses live ones. */
  deletePaths(paths: StorePath[]): Promise<GcResult>;
  collectGarbage(options?: GcOptions): Promise<GcResult>;
  verify(options?: VerifyOptions): Promise<VerifyResult>;
  optimise(): Promise<OptimiseResult>;

  close(): Promise<void>;
}

/** One path for {@link Store.addFromNars}: its declared info and a way to open its NAR. */
export interface NarSource {
  info: PathInfo;
  /**
   * Opens the NAR when the store is ready to read it (so a batch of thousands holds a few open
   * at a time). Called at most once. A NAR already in memory may be given as bytes.
   */
  nar: () => Readable | Uint8Array | Promise<Readable | Uint8Array>;
}

/** Options for {@link Store.addFromNars}. */
export interface AddNarsOptions {
  /** NARs read and restored at once (default 1; more overlaps the latency of remote sources). */
  concurrency?: number | undefined;
}

/** One path to register, with the `.drv` outputs to record when it is a derivation. */
export interface Registration {
  info: PathInfo;
  /** Output name → full output path, for `.drv` paths (the `DerivationOutputs` rows). */
  derivationOutputs?: Map<string, string> | undefined;
}

/**
 * A store whose objects are files on this machine (the local store, the layered store): what
 * builds need beyond the plain contract.
 */
export interface LocalFsStore extends Store {
  /** Where the store dir's files are on this machine (the merged dir for a layered store). */
  readonly realStoreDir: string;
  /** The store's state dir (`nix/var/nix`): gcroots, temproots, db. */
  readonly stateDir: string;
  /** Build logs go under `<logDir>/drvs/`. */
  readonly logDir: string;
  realPath(path: StorePath): string;
  /** Registers objects already in place under the real store dir, in one transaction. */
  registerValidPaths(batch: Registration[]): Promise<void>;
  /** Runs `fn` holding the per-path locks (`<real>/<base>.lock`) that Nix also honours. */
  withPathLocks<T>(paths: StorePath[], fn: () => Promise<T>): Promise<T>;
  /** Keeps `path` from being collected while this process lives. */
  addTempRoot(path: StorePath): Promise<void>;
  /** {@link addTempRoot} for many paths at once (the local store: one `gc.lock` round, one write). */
  addTempRoots(paths: StorePath[]): Promise<void>;
}

/** True for stores whose objects are files on this machine. */
export function isLocalFsStore(store: Store): store is LocalFsStore {
  return typeof (store as Partial<LocalFsStore>).realPath === 'function' && typeof (store as Partial<LocalFsStore>).registerValidPaths === 'function';
}
