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
import { existsSync, lstatSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';

import { StrataError } from '../../core/error.js';
import type { StoreDir, StorePath } from '../../core/store-path.js';
import { computeClosure, topoSortInfos } from '../closure.js';
import type { LocalStore } from '../local/local-store.js';
import { removeTree } from '../../fs/remove-tree.js';
import type {
  AddNarsOptions,
  AddPathOptions,
  GcOptions,
  GcResult,
  LocalFsStore,
  NarSource,
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
  /** A file that exists while a remount is owed (strata's managed mounts honour it when opening). */
  remountMarker?: string | undefined;
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

  /**
   * The closure of `paths` as `queryPathInfo` would answer member by member (upper first, else
   * the first lower that has it, `layer` set), layer by layer in a few batched queries each:
   * - the upper DB's rows are final: its Refs point at its own rows, so it is closed;
   * - each lower in priority order gives the closure of the start paths it holds; a member that
   *   a layer above it also holds is answered by that layer in the next round (rare: a lower
   *   path copied up, or in two lowers), so no member needs a round trip of its own.
   */
  async queryClosure(paths: StorePath[]): Promise<PathInfo[]> {
    const out = new Map<string, PathInfo>();
    let pending = [...new Map(paths.map((p) => [p.baseName, p])).values()];
    while (pending.length > 0) {
      const own = await closureIn(this.upper, pending);
      const layers = await this.layersOf(own.map((i) => i.path));
      for (const info of own) out.set(info.path.baseName, { ...info, layer: layers.get(info.path.baseName)! });
      pending = pending.filter((p) => !out.has(p.baseName));
      const deferred = new Map<string, StorePath>();
      for (const [i, l] of this.lowers.entries()) {
        if (pending.length === 0) break;
        const infos = (await closureIn(l.store, pending)).filter((info) => !out.has(info.path.baseName));
        if (infos.length === 0) continue;
        const above = await this.heldAbove(infos.map((info) => info.path), i);
        for (const info of infos) {
          const base = info.path.baseName;
          if (above.has(base)) deferred.set(base, info.path);
          else out.set(base, { ...info, layer: l.name });
        }
        pending = pending.filter((p) => !out.has(p.baseName));
      }
      // Start paths no layer holds are left out (the caller reports them).
      pending = [...deferred.values()].filter((p) => !out.has(p.baseName));
    }
    return [...out.values()];
  }

  /** The base names of `paths` that the upper DB or a lower before `lowers[i]` holds. */
  private async heldAbove(paths: StorePath[], i: number): Promise<Set<string>> {
    const held = this.upperHolds(paths);
    for (const l of this.lowers.slice(0, i)) for (const p of await l.store.queryValidPaths(paths)) held.add(p.baseName);
    return held;
  }

  /**
   * The base names of `paths` the upper DB holds. The upper is usually far smaller than a lower
   * closure (a few hundred copied-up rows against 71,000 members in bench/layered.ts (a), where
   * probing each member cost 0.4 s): then its rows are listed instead of probed.
   */
  private upperHolds(paths: StorePath[]): Set<string> {
    const db = this.upper.db;
    const rows = db.countValid();
    if (rows === 0) return new Set();
    if (rows < paths.length) {
      // Keyed by hash part, a field: no base name is built for the many members.
      const own = new Map(db.queryAllValid().map((p) => [p.hashPart, p]));
      return new Set(paths.flatMap((p) => (own.get(p.hashPart)?.equals(p) ? [p.baseName] : [])));
    }
    return new Set(db.queryValid(paths).map((p) => p.baseName));
  }

  /**
   * {@link layerOf} for many paths of the upper DB at once: the upper layer listed once (not a
   * `stat` per path) when there are many, then one batched validity query per lower.
   */
  private async layersOf(paths: StorePath[]): Promise<Map<string, string>> {
    const layers = new Map<string, string>();
    if (paths.length === 0) return layers;
    // Beyond a few hundred paths one readdir costs less than a stat each.
    const listed = paths.length > 256 ? new Set(readdirSync(this.options.upperLayer)) : undefined;
    let rest: StorePath[] = [];
    for (const p of paths) {
      if ((listed === undefined || listed.has(p.baseName)) && existsSync(join(this.options.upperLayer, p.baseName))) layers.set(p.baseName, 'upper');
      else rest.push(p);
    }
    for (const l of this.lowers) {
      if (rest.length === 0) break;
      const here = new Set((await l.store.queryValidPaths(rest)).map((p) => p.baseName));
      for (const p of rest) if (here.has(p.baseName)) layers.set(p.baseName, l.name);
      rest = rest.filter((p) => !here.has(p.baseName));
    }
    for (const p of rest) layers.set(p.baseName, 'upper');
    return layers;
  }

  /** Validity with copy-up, as Nix's overlay store: a lower hit gets its closure's rows. */
  async isValidPath(path: StorePath): Promise<boolean> {
    if (await this.upper.isValidPath(path)) return true;
    return (await this.copyUp([path])).length > 0;
  }

  async queryValidPaths(paths: StorePath[]): Promise<StorePath[]> {
    const valid = new Set((await this.upper.queryValidPaths(paths)).map((p) => p.baseName));
    const missing = paths.filter((p) => !valid.has(p.baseName));
    if (missing.length > 0) for (const p of await this.copyUp(missing)) valid.add(p.baseName);
    return paths.filter((p) => valid.has(p.baseName));
  }

  /**
   * Copies the metadata of lower paths (and their closures, references first) into the upper DB,
   * one transaction per lower that has some (`copyUpRows`); no file is touched. Lowers are asked
   * in priority order, so a member two lowers hold gets the first one's row. Returns those of
   * `paths` found in some lower.
   */
  async copyUp(paths: StorePath[], lowers: Lower[] = this.lowers): Promise<StorePath[]> {
    let remaining = [...new Map(paths.map((p) => [p.baseName, p])).values()];
    const found: StorePath[] = [];
    for (const [i, l] of lowers.entries()) {
      if (remaining.length === 0) break;
      let here: StorePath[];
      if (l.realStoreDir) {
        // A lower in the overlay is a local store: its database is read directly.
        const { copyUpRows } = await import('./copy-up.js');
        await this.copyUpShadowed(l, remaining, lowers.slice(0, i));
        here = (await copyUpRows(this.storeDir, this.upper.db, (l.store as LocalStore).db, remaining, (drv) => this.lowerDerivationOutputs(drv))).found;
      } else {
        here = await l.store.queryValidPaths(remaining);
        if (here.length > 0) await this.fetchUp(l, here);
      }
      if (here.length === 0) continue;
      found.push(...here);
      const got = new Set(here.map((p) => p.baseName));
      remaining = remaining.filter((p) => !got.has(p.baseName));
    }
    return found;
  }

  /**
   * Copies up, from the lowers above `lower`, the members of its closure of `paths` that they
   * hold too: overlayfs shows their files, not `lower`'s, so their rows must come from them (two
   * builds of one input-addressed path may differ). Then `copyUpRows` from `lower` keeps them.
   */
  private async copyUpShadowed(lower: Lower, paths: StorePath[], above: Lower[]): Promise<void> {
    const local = above.filter((l) => l.realStoreDir);
    const db = (lower.store as LocalStore).db;
    if (local.length === 0 || db.queryValid(paths).length === 0) return;
    const members = db.queryClosureRows(paths).map((r) => this.storeDir.parse(r.path));
    if (members.length === 0) return;
    const have = new Set(this.upper.db.queryValid(members).map((p) => p.baseName));
    let missing = members.filter((p) => !have.has(p.baseName));
    for (const l of local) {
      if (missing.length === 0) return;
      const held = await l.store.queryValidPaths(missing);
      if (held.length === 0) continue;
      await this.copyUp(held, [l]);
      const got = new Set(held.map((p) => p.baseName));
      missing = missing.filter((p) => !got.has(p.baseName));
    }
  }

  /**
   * Copies up those of `paths` the upper lacks: references of something about to be added are
   * usually there already (a profile's 30 packages, copied up a moment before), and then no
   * lower is read at all.
   */
  private async copyUpMissing(paths: StorePath[]): Promise<void> {
    if (paths.length === 0) return;
    const have = new Set(this.upper.db.queryValid(paths).map((p) => p.baseName));
    const missing = paths.filter((p) => !have.has(p.baseName));
    if (missing.length > 0) await this.copyUp(missing);
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

  /** The `DerivationOutputs` of a `.drv` (full path) from the first lower that has rows for it. */
  private async lowerDerivationOutputs(drv: string): Promise<Map<string, string> | undefined> {
    const path = this.storeDir.parse(drv);
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
    await this.#requireValid(path);
    return this.upper.narFromPath(path);
  }

  /** {@link narFromPath} in one buffer, for small paths. */
  async narBytes(path: StorePath): Promise<Uint8Array> {
    await this.#requireValid(path);
    return this.upper.narBytes(path);
  }

  async #requireValid(path: StorePath): Promise<void> {
    if (!(await this.isValidPath(path))) {
      throw new StrataError('PATH_NOT_VALID', `Cannot read '${this.storeDir.print(path)}': it is not valid in '${this.uri}'`, { value: this.storeDir.print(path) });
    }
  }

  async addFromNar(info: PathInfo, nar: Readable): Promise<void> {
    if (await this.isValidPath(info.path)) {
      nar.resume(); // A lower has it: a copy-up, no bytes.
      return;
    }
    await this.copyUpMissing(info.references.filter((r) => !r.equals(info.path)));
    await this.upper.addFromNar(info, nar);
  }

  /** {@link addFromNar} for a batch: one registration in the upper for what no layer has. */
  async addFromNars(items: NarSource[], options?: AddNarsOptions): Promise<void> {
    const inBatch = new Set(items.map((i) => i.info.path.baseName));
    const fresh: NarSource[] = [];
    for (const item of items) if (!(await this.isValidPath(item.info.path))) fresh.push(item); // A lower's: copied up, no bytes.
    await this.copyUp(fresh.flatMap((i) => i.info.references).filter((r) => !inBatch.has(r.baseName)));
    await this.upper.addFromNars(fresh, options);
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
    await this.copyUpMissing(references);
    return this.upper.addPath(fsPath, options);
  }

  async addText(name: string, text: string | Uint8Array, references: StorePath[]): Promise<PathInfo> {
    const { Hash } = await import('../../core/hash.js');
    const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
    const path = this.storeDir.makeTextPath(name, Hash.of('sha256', bytes), references);
    if (await this.isValidPath(path)) return (await this.queryPathInfo(path))!;
    await this.copyUpMissing(references);
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
    await this.copyUpMissing([...refs, ...batch.map((r) => r.info.path)]);
    await this.upper.registerValidPaths(batch);
  }

  withPathLocks<T>(paths: StorePath[], fn: () => Promise<T>): Promise<T> {
    return this.upper.withPathLocks(paths, fn);
  }

  addTempRoot(path: StorePath): Promise<void> {
    return this.upper.addTempRoot(path);
  }

  addTempRoots(paths: StorePath[]): Promise<void> {
    return this.upper.addTempRoots(paths);
  }

  /** True when some lower holds `path` (its own metadata says so). */
  async lowerHas(path: StorePath): Promise<Lower | undefined> {
    for (const l of this.lowers) if (await l.store.isValidPath(path)) return l;
    return undefined;
  }

  /**
   * The first lower in the overlay (a local one) that holds `path`: the one whose files show
   * through the merged dir. A binary-cache lower's paths are fetched into the upper layer instead.
   */
  overlayLowerHas(path: StorePath): Lower | undefined {
    return overlayLowerOf(this.lowers, path);
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
      this.requestRemount();
      removeTree(inUpper);
    } else {
      removeTree(this.upper.realPath(path));
    }
    return freed;
  }

  /** Whether a local lower (one whose files are in the overlay) holds `path`; synchronous. */
  private localLowerHas(path: StorePath): boolean {
    return this.overlayLowerHas(path) !== undefined;
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

  /**
   * Asks for a remount at the next `remountIfNecessary`; call it *before* editing the upper layer
   * directly. With a `remountMarker`, the request is also written down, so a process killed
   * before it remounts leaves it for the next open (stale overlay dentries otherwise stay).
   */
  requestRemount(): void {
    if (!this.remountNeeded && this.options.remountMarker) writeFileSync(this.options.remountMarker, '');
    this.remountNeeded = true;
  }

  /**
   * Puts back the files of a path whose upper row survived but whose files no layer has (a lower
   * generation dropped it), from the first binary-cache lower or substituter that has it. The row is kept; the NAR is
   * verified against it before the files appear.
   */
  async fetchFromSubstituters(path: StorePath): Promise<boolean> {
    const { repairFromSubstituters } = await import('../repair.js');
    const caches = this.lowers.filter((l) => l.realStoreDir === undefined).map((l) => l.store.uri);
    return repairFromSubstituters(this.upper, [...caches, ...(this.options.substituters ?? [])], path);
  }

  /** Runs the remount when a deletion straight from the upper layer asked for one. */
  remountIfNecessary(): void {
    if (!this.remountNeeded) return;
    this.remountNeeded = false;
    this.options.remount();
    if (this.options.remountMarker) rmSync(this.options.remountMarker, { force: true });
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

  /**
   * Deduplication only: upper copies of paths a lower now holds are removed (unless the lower's
   * bytes differ from what the upper row describes, where Nix would leave a row that no longer
   * matches the files).
   */
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
      const lower = this.overlayLowerHas(path);
      if (!lower) continue;
      // A rebuilt path (other bytes under the same name): the upper row describes the upper copy.
      if ((await lowerCopyMatches(this.upper, lower, path)) === false) continue;
      const inUpper = join(this.options.upperLayer, name);
      bytesSaved += treeSize(inUpper);
      this.requestRemount();
      removeTree(inUpper);
      filesLinked++;
    }
    this.remountIfNecessary();
    return { filesLinked, bytesSaved };
  }

  async close(): Promise<void> {
    await this.upper.close();
    for (const l of this.lowers) await l.store.close();
  }
}

/** The closure of the valid ones of `paths` inside one store (batched where it can), as its own path infos. */
async function closureIn(store: Store, paths: StorePath[]): Promise<PathInfo[]> {
  if (store.queryClosure) return store.queryClosure(paths);
  const valid = await store.queryValidPaths(paths);
  return valid.length > 0 ? [...(await computeClosure(store, valid)).values()] : [];
}

/** The first local lower of `lowers` holding `path`: the one whose files the overlay shows. */
export function overlayLowerOf(lowers: Lower[], path: StorePath): Lower | undefined {
  return lowers.find((l) => l.realStoreDir !== undefined && (l.store as LocalStore).db.isValid(path));
}

/**
 * Whether `lower`'s copy of `path` has the NAR hash the upper row records: false for a rebuilt
 * path (same name, other bytes), whose upper copy is the one its row describes; undefined when
 * either has no row. The lower is asked only when the upper has a row.
 */
export async function lowerCopyMatches(upper: Store, lower: Lower, path: StorePath): Promise<boolean | undefined> {
  const own = await upper.queryPathInfo(path);
  const theirs = own ? await lower.store.queryPathInfo(path) : undefined;
  return own && theirs ? own.narHash.equals(theirs.narHash) : undefined;
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
