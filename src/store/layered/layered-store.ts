/**
 * The layered store: a writable upper local store whose real store dir is an overlayfs merge of
 * its own upper layer over the lowers' store dirs, and the lowers themselves, each with its own
 * metadata, asked in priority order.
 *
 * The rules (real Nix's `local-overlay` store, nix-local-overlay.md §5–§6, plus fixes):
 * - path info: upper, else the first lower that has it, without copy-up;
 * - validity: upper, else a lower, and then **copy-up**: the lower's rows for the whole closure
 *   go into the upper DB unchanged, references first, so real Nix opening the upper DB over the
 *   merged dir sees a consistent store; no byte is written;
 * - referrers and derivers: unions; hash-part lookup: upper then lowers; all paths: upper only;
 * - adding a path a lower has is a copy-up; anything else lands in the upper layer, through the
 *   merged dir; never a byte or a lock in a lower;
 * - deleting: per layer (see `deleteObjectFiles`), GC follows upper-DB referrers only.
 */
import { existsSync, lstatSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';

import { StrataError } from '../../core/error.js';
import type { StoreDir, StorePath } from '../../core/store-path.js';
import { computeClosure, topoSortInfos } from '../closure.js';
import type { LocalStore } from '../local/local-store.js';
import { removeTree } from '../local/staging.js';
import type {
  AddPathOptions,
  GcOptions,
  GcResult,
  LocalFsStore,
  OptimiseResult,
  PathInfo,
  Registration,
  Store,
  VerifyOptions,
  VerifyResult,
} from '../store.js';
import { lexists } from '../../fs/exists.js';

/** One lower layer: a store and the name answers carry in `layer`. */
export interface Lower {
  name: string;
  store: Store;
  /** The lower's store dir on this machine, for local lowers (part of the overlay). */
  realStoreDir?: string | undefined;
}

export interface LayeredOptions {
  /** The overlay's upper directory (files of upper-only objects). */
  upperLayer: string;
  /** Called after strata deleted straight from the upper layer (resets overlayfs caches). */
  remount: () => void;
  /** Keys trusted for paths fetched from binary-cache lowers (strata.json `trustedPublicKeys`). */
  trustedPublicKeys?: string[] | undefined;
  /** Refuse unsigned paths from binary-cache lowers (default true). */
  requireSigs?: boolean | undefined;
  /** Store URIs asked when no layer has a path (strata.json `substituters`). */
  substituters?: string[] | undefined;
}

export class LayeredStore implements LocalFsStore {
  readonly uri: string;
  readonly storeDir: StoreDir;
  readonly upper: LocalStore;
  readonly lowers: Lower[];
  private readonly options: LayeredOptions;
  private remountNeeded = false;

  constructor(uri: string, upper: LocalStore, lowers: Lower[], options: LayeredOptions) {
    this.uri = uri;
    this.upper = upper;
    this.storeDir = upper.storeDir;
    this.lowers = lowers;
    this.options = options;
    for (const l of lowers) {
      if (l.store.storeDir.path !== upper.storeDir.path) {
        throw new StrataError('LAYER_MISMATCH', `Cannot stack '${l.store.uri}': its store dir '${l.store.storeDir.path}' differs from '${upper.storeDir.path}'`, { value: l.store.uri });
      }
    }
    upper.objectDeleter = (path) => this.deleteObjectFiles(path);
    upper.objectLister = () => this.upperObjectNames();
  }

  get realStoreDir(): string {
    return this.upper.realStoreDir;
  }
  get stateDir(): string {
    return this.upper.stateDir;
  }
  get logDir(): string {
    return this.upper.logDir;
  }
  get upperLayer(): string {
    return this.options.upperLayer;
  }

  realPath(path: StorePath): string {
    return this.upper.realPath(path);
  }

  /** Which layer holds the files of a path the upper DB knows. */
  private async layerOf(path: StorePath): Promise<string> {
    if (existsSync(join(this.options.upperLayer, path.baseName))) return 'upper';
    for (const l of this.lowers) if (await l.store.isValidPath(path)) return l.name;
    return 'upper';
  }

  async queryPathInfo(path: StorePath): Promise<PathInfo | undefined> {
    const own = await this.upper.queryPathInfo(path);
    if (own) return { ...own, layer: await this.layerOf(path) };
    for (const l of this.lowers) {
      const info = await l.store.queryPathInfo(path);
      if (info) return { ...info, layer: l.name };
    }
    return undefined;
  }

  /** Validity with copy-up, as Nix's overlay store: a lower hit gets its closure's rows. */
  async isValidPath(path: StorePath): Promise<boolean> {
    if (await this.upper.isValidPath(path)) return true;
    return (await this.copyUp([path])).length > 0;
  }

  async queryValidPaths(paths: StorePath[]): Promise<StorePath[]> {
    const inUpper = await this.upper.queryValidPaths(paths);
    const missing = paths.filter((p) => !inUpper.some((u) => u.equals(p)));
    const copied = missing.length > 0 ? await this.copyUp(missing) : [];
    const valid = new Set([...inUpper, ...copied].map((p) => p.baseName));
    return paths.filter((p) => valid.has(p.baseName));
  }

  /**
   * Copies the metadata of lower paths (and their closures, references first) into the upper DB
   * in one transaction; no file is touched. Returns those of `paths` found in some lower.
   */
  async copyUp(paths: StorePath[], lowers: Lower[] = this.lowers): Promise<StorePath[]> {
    let remaining = paths.filter((p, i) => paths.findIndex((q) => q.equals(p)) === i);
    const found: StorePath[] = [];
    const infos = new Map<string, PathInfo>();
    for (const l of lowers) {
      if (remaining.length === 0) break;
      const here = await l.store.queryValidPaths(remaining);
      if (here.length === 0) continue;
      found.push(...here);
      remaining = remaining.filter((p) => !here.some((h) => h.equals(p)));
      if (!l.realStoreDir) {
        await this.fetchUp(l, here);
        continue;
      }
      for (const info of (await lowerClosure(l.store, here)).values()) if (!infos.has(info.path.baseName)) infos.set(info.path.baseName, info);
    }
    if (infos.size === 0) return found;
    const have = new Set((await this.upper.queryValidPaths([...infos.values()].map((i) => i.path))).map((p) => p.baseName));
    const batch: Registration[] = [];
    for (const info of topoSortInfos(infos.values())) {
      if (have.has(info.path.baseName)) continue;
      const { layer: _layer, ...row } = info;
      batch.push({ info: row, derivationOutputs: await this.lowerDerivationOutputs(info.path) });
    }
    if (batch.length > 0) await this.upper.registerValidPaths(batch);
    return found;
  }

  /**
   * Copy-up from a lower that is a binary cache: its NARs are fetched into the upper, closure
   * references first, each checked against the trusted keys and verified before it becomes
   * valid. Closure members a local lower has get the metadata copy-up instead (no bytes).
   */
  private async fetchUp(lower: Lower, paths: StorePath[]): Promise<void> {
    const { copyItems, checkTrust } = await import('../copy.js');
    const local = this.lowers.filter((l) => l.realStoreDir);
    const items = [];
    for (const info of topoSortInfos((await computeClosure(lower.store, paths)).values())) {
      if (await this.upper.isValidPath(info.path)) continue;
      if ((await this.copyUp([info.path], local)).length > 0) continue;
      items.push({ info, source: lower.store });
    }
    checkTrust(this.upper, items, { trustedPublicKeys: this.options.trustedPublicKeys ?? [], requireSigs: this.options.requireSigs });
    await copyItems(this.upper, items);
  }

  private async lowerDerivationOutputs(path: StorePath): Promise<Map<string, string> | undefined> {
    if (!path.isDerivation()) return undefined;
    for (const l of this.lowers) {
      const outs = await l.store.queryDerivationOutputs(path).catch(() => new Map<string, StorePath>());
      if (outs.size > 0) return new Map([...outs].map(([k, v]) => [k, this.storeDir.print(v)]));
    }
    return undefined;
  }

  async queryAllValidPaths(): Promise<StorePath[]> {
    return this.upper.queryAllValidPaths();
  }

  async queryReferrers(path: StorePath): Promise<StorePath[]> {
    const all = new Map<string, StorePath>();
    for (const p of await this.upper.queryReferrers(path)) all.set(p.baseName, p);
    for (const l of this.lowers) for (const p of await l.store.queryReferrers(path).catch(() => [])) all.set(p.baseName, p);
    return [...all.values()];
  }

  async queryValidDerivers(path: StorePath): Promise<StorePath[]> {
    const all = new Map<string, StorePath>();
    for (const p of await this.upper.queryValidDerivers(path)) all.set(p.baseName, p);
    for (const l of this.lowers) for (const p of await l.store.queryValidDerivers(path).catch(() => [])) all.set(p.baseName, p);
    return [...all.values()];
  }

  async queryDerivationOutputs(drvPath: StorePath): Promise<Map<string, StorePath>> {
    const own = await this.upper.queryDerivationOutputs(drvPath);
    if (own.size > 0) return own;
    for (const l of this.lowers) {
      const outs = await l.store.queryDerivationOutputs(drvPath).catch(() => new Map<string, StorePath>());
      if (outs.size > 0) return outs;
    }
    return own;
  }

  async queryPathFromHashPart(hashPart: string): Promise<StorePath | undefined> {
    const own = await this.upper.queryPathFromHashPart(hashPart);
    if (own) return own;
    for (const l of this.lowers) {
      const p = await l.store.queryPathFromHashPart(hashPart);
      if (p) return p;
    }
    return undefined;
  }

  async narFromPath(path: StorePath): Promise<Readable> {
    if (!(await this.isValidPath(path))) {
      throw new StrataError('PATH_NOT_VALID', `Cannot read '${this.storeDir.print(path)}': it is not valid in '${this.uri}'`, { value: this.storeDir.print(path) });
    }
    return this.upper.narFromPath(path);
  }

  async addFromNar(info: PathInfo, nar: Readable): Promise<void> {
    if (await this.isValidPath(info.path)) {
      nar.resume(); // A lower has it: a copy-up, no bytes.
      return;
    }
    await this.copyUp(info.references.filter((r) => !r.equals(info.path)));
    await this.upper.addFromNar(info, nar);
  }

  async addPath(fsPath: string, options: AddPathOptions = {}): Promise<PathInfo> {
    // Compute the path first: if a lower has it, nothing is written (Nix's redundant-add).
    const { hashFile, hashPath } = await import('../../fs/hash-path.js');
    const name = options.name ?? basename(fsPath);
    const method = options.method ?? 'recursive';
    const algo = options.hashAlgo ?? 'sha256';
    const references = options.references ?? [];
    const hash = method === 'flat' ? await hashFile(fsPath, algo) : (await hashPath(fsPath, algo)).hash;
    const path = this.storeDir.makeFixedOutputPath(name, hash, method === 'recursive', references);
    if (await this.isValidPath(path)) return (await this.queryPathInfo(path))!;
    await this.copyUp(references);
    return this.upper.addPath(fsPath, options);
  }

  async addText(name: string, text: string | Uint8Array, references: StorePath[]): Promise<PathInfo> {
    const { Hash } = await import('../../core/hash.js');
    const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
    const path = this.storeDir.makeTextPath(name, Hash.of('sha256', bytes), references);
    if (await this.isValidPath(path)) return (await this.queryPathInfo(path))!;
    await this.copyUp(references);
    return this.upper.addText(name, bytes, references);
  }

  /** Signing a lower-only path copies it up first (Nix crashes there, §9.4). */
  async addSignatures(path: StorePath, sigs: string[]): Promise<void> {
    if (!(await this.isValidPath(path))) {
      throw new StrataError('PATH_NOT_VALID', `Cannot sign '${this.storeDir.print(path)}': it is not valid`, { value: this.storeDir.print(path) });
    }
    await this.upper.addSignatures(path, sigs);
  }

  /**
   * Registers objects already in place (build outputs) — "merge, don't mask": a path a lower
   * has is copied up first so the update keeps its registration time and deriver; references are
   * copied up before anything refers to them (Nix's §9.1 hazard).
   */
  async registerValidPaths(batch: Registration[]): Promise<void> {
    const inBatch = new Set(batch.map((r) => r.info.path.baseName));
    const refs = batch.flatMap((r) => r.info.references).filter((r) => !inBatch.has(r.baseName));
    await this.copyUp([...refs, ...batch.map((r) => r.info.path)]);
    await this.upper.registerValidPaths(batch);
  }

  withPathLocks<T>(paths: StorePath[], fn: () => Promise<T>): Promise<T> {
    return this.upper.withPathLocks(paths, fn);
  }

  addTempRoot(path: StorePath): Promise<void> {
    return this.upper.addTempRoot(path);
  }

  /** True when some lower holds `path` (its own metadata says so). */
  async lowerHas(path: StorePath): Promise<Lower | undefined> {
    for (const l of this.lowers) if (await l.store.isValidPath(path)) return l;
    return undefined;
  }

  /**
   * Deletes one object's files, per layer (nix-local-overlay.md §6), after its upper row went:
   * in both layers → straight from the upper dir (no whiteout; a remount follows); upper only →
   * through the merged dir; lower only → nothing. Returns the bytes freed (0 when nothing was,
   * unlike Nix issue 16269).
   */
  deleteObjectFiles(path: StorePath): number {
    const inUpper = join(this.options.upperLayer, path.baseName);
    if (!lexists(inUpper)) return 0;
    const freed = treeSize(inUpper);
    if (this.localLowerHas(path)) {
      removeTree(inUpper);
      this.remountNeeded = true;
    } else {
      removeTree(this.upper.realPath(path));
    }
    return freed;
  }

  /** Whether a local lower (one whose files are in the overlay) holds `path`; synchronous. */
  private localLowerHas(path: StorePath): boolean {
    return this.lowers.some((l) => l.realStoreDir !== undefined && (l.store as LocalStore).db.isValid(path));
  }

  /**
   * Names the GC may consider: entries of the upper layer and the upper DB's rows (copied-up
   * lower paths, whose rows it may drop), never the lowers' own entries.
   */
  private upperObjectNames(): string[] {
    const names = new Set<string>(readdirSync(this.options.upperLayer));
    for (const p of this.upper.db.queryAllValid()) names.add(p.baseName);
    return [...names];
  }

  /** Asks for a remount at the next `remountIfNecessary` (after editing the upper layer directly). */
  requestRemount(): void {
    this.remountNeeded = true;
  }

  /**
   * Puts back the files of a path whose upper row survived but whose files no layer has (a lower
   * generation dropped it), from the first substituter that has it. The row is kept; the NAR is
   * verified against it before the files appear.
   */
  async fetchFromSubstituters(path: StorePath): Promise<boolean> {
    const { repairFromSubstituters } = await import('../repair.js');
    return repairFromSubstituters(this.upper, this.options.substituters ?? [], path);
  }

  /** Runs the remount when a deletion straight from the upper layer asked for one. */
  remountIfNecessary(): void {
    if (!this.remountNeeded) return;
    this.remountNeeded = false;
    this.options.remount();
  }

  async deletePaths(paths: StorePath[]): Promise<GcResult> {
    // Lower-only paths are "deleted" by dropping the upper row: copy up first so there is one.
    for (const p of paths) await this.isValidPath(p);
    try {
      return await this.upper.deletePaths(paths);
    } finally {
      this.remountIfNecessary();
    }
  }

  async collectGarbage(options: GcOptions = {}): Promise<GcResult> {
    try {
      return await this.upper.collectGarbage(options);
    } finally {
      this.remountIfNecessary();
    }
  }

  /** Checks the upper DB's rows (files looked up through the merged dir); lowers are untouched. */
  async verify(options: VerifyOptions = {}): Promise<VerifyResult> {
    return this.upper.verify(options);
  }

  /** Deduplication only: upper copies of paths a lower now holds are removed. */
  async optimise(): Promise<OptimiseResult> {
    let filesLinked = 0;
    let bytesSaved = 0;
    for (const name of readdirSync(this.options.upperLayer)) {
      let path: StorePath;
      try {
        path = this.storeDir.parse(`${this.storeDir.path}/${name}`);
      } catch {
        continue;
      }
      if (!this.localLowerHas(path)) continue;
      const inUpper = join(this.options.upperLayer, name);
      bytesSaved += treeSize(inUpper);
      removeTree(inUpper);
      filesLinked++;
      this.remountNeeded = true;
    }
    this.remountIfNecessary();
    return { filesLinked, bytesSaved };
  }

  async close(): Promise<void> {
    await this.upper.close();
    for (const l of this.lowers) await l.store.close();
  }
}

/** The closure of `paths` inside one lower, as that lower's own path infos. */
async function lowerClosure(store: Store, paths: StorePath[]): Promise<Map<string, PathInfo>> {
  const local = store as Store & { db?: { queryClosure(p: StorePath[]): StorePath[]; queryPathInfos?(p: StorePath[]): PathInfo[] } };
  if (local.db && typeof local.db.queryClosure === 'function' && typeof local.db.queryPathInfos === 'function') {
    // One recursive query and one batched read instead of a round trip per path (a 500-path
    // closure is copied up in milliseconds this way).
    const closure = local.db.queryClosure(paths);
    return new Map(local.db.queryPathInfos(closure).map((i) => [i.path.baseName, i]));
  }
  return computeClosure(store, paths);
}


/** Bytes that deleting a tree frees: regular files with no other links, and symlinks. */
export function treeSize(p: string): number {
  const st = lstatSync(p);
  if (st.isDirectory()) {
    let total = 0;
    for (const e of readdirSync(p)) total += treeSize(join(p, e));
    return total;
  }
  // A file also linked from `.links` (nlink 2) is freed with it once the link pass runs, as Nix counts.
  return st.isFile() && st.nlink > 2 ? 0 : st.size;
}
