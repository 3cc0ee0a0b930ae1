/**
 * A local Nix store: files under the real store dir, metadata in the Nix database. The same thing
 * real Nix keeps on disk, so either can open what the other wrote.
 */
import { chmodSync, existsSync, lutimesSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';

import { StrataError } from '../../core/error.js';
import { Hash } from '../../core/hash.js';
import { StoreDir, type StorePath } from '../../core/store-path.js';
import type { AddPathOptions, GcOptions, GcResult, LocalFsStore, OptimiseResult, PathInfo, Registration, VerifyOptions, VerifyResult } from '../store.js';
import type { LocalStoreConfig } from './config.js';
import { NixDatabase } from './database.js';
import { acquirePathLocks, BigLock, PathLock, TempRoots } from './locks.js';

/**
 * The NAR and staging modules (with the NAR parser and writer, 8 ESM files) are loaded when a
 * path is added or read, not when the store opens: a query such as `strata path-info` never
 * needs them, and each module read costs Node 20 about a millisecond of start-up.
 */
let fsModules: Promise<typeof import('../../fs/nar-dump.js') & typeof import('../../fs/hash-path.js') & typeof import('../../fs/nar-restore.js') & typeof import('./staging.js')> | undefined;
/** Loaded once and kept: an `import()` per call would resolve the specifiers again every time. */
function loadFs() {
  fsModules ??= Promise.all([import('../../fs/nar-dump.js'), import('../../fs/hash-path.js'), import('../../fs/nar-restore.js'), import('./staging.js')]).then(([a, b, c, d]) => ({ ...a, ...b, ...c, ...d }));
  return fsModules;
}

export class LocalStore implements LocalFsStore {
  readonly uri: string;
  readonly storeDir: StoreDir;
  readonly config: LocalStoreConfig;
  readonly db: NixDatabase;
  readonly tempRoots: TempRoots | undefined;
  private bigLock: BigLock | undefined;
  /**
   * How the GC removes one object's files, returning the bytes freed. A layered store replaces it
   * to delete per layer; by default the files under the real store dir are removed.
   */
  objectDeleter: ((path: StorePath) => number) | undefined;
  /** The entries of the store dir the GC walks; a layered store lists its upper layer only. */
  objectLister: (() => string[]) | undefined;

  private constructor(uri: string, config: LocalStoreConfig, db: NixDatabase, bigLock: BigLock | undefined) {
    this.uri = uri;
    this.config = config;
    this.storeDir = new StoreDir(config.storeDir);
    this.db = db;
    this.bigLock = bigLock;
    this.tempRoots = config.readOnly ? undefined : new TempRoots(config.stateDir);
  }

  /**
   * Opens (creating the directories and DB when needed and not read-only) a local store.
   * Read-only opens write nothing and take no lock anywhere in the store.
   */
  static async open(uri: string, config: LocalStoreConfig): Promise<LocalStore> {
    const storeDir = new StoreDir(config.storeDir);
    const dbDir = join(config.stateDir, 'db');
    if (config.readOnly) {
      return new LocalStore(uri, config, NixDatabase.open(dbDir, storeDir, { readOnly: true }), undefined);
    }
    for (const d of [config.realStoreDir, dbDir, join(config.stateDir, 'gcroots'), join(config.stateDir, 'profiles'), join(config.stateDir, 'temproots')]) {
      mkdirSync(d, { recursive: true });
    }
    const bigLock = await BigLock.acquireShared(dbDir);
    try {
      return new LocalStore(uri, config, NixDatabase.open(dbDir, storeDir), bigLock);
    } catch (e) {
      bigLock.release();
      throw e;
    }
  }

  /** Where a store path's files are on this machine. */
  realPath(path: StorePath): string {
    return join(this.config.realStoreDir, path.baseName);
  }

  private requireWritable(action: string): void {
    if (this.config.readOnly) {
      throw new StrataError('STORE_READ_ONLY', `Cannot ${action}: store '${this.uri}' is read-only`, { value: this.uri });
    }
  }

  async queryPathInfo(path: StorePath): Promise<PathInfo | undefined> {
    return this.db.queryPathInfo(path);
  }

  async isValidPath(path: StorePath): Promise<boolean> {
    return this.db.isValid(path);
  }

  changeToken(): Buffer | undefined {
    return this.db.changeToken();
  }

  async queryValidPaths(paths: StorePath[]): Promise<StorePath[]> {
    return this.db.queryValid(paths);
  }

  async queryAllValidPaths(): Promise<StorePath[]> {
    return this.db.queryAllValid();
  }

  async queryClosure(paths: StorePath[]): Promise<PathInfo[]> {
    return this.db.queryClosureInfos(paths);
  }

  async queryReferrers(path: StorePath): Promise<StorePath[]> {
    return this.db.queryReferrers(path);
  }

  async queryValidDerivers(path: StorePath): Promise<StorePath[]> {
    const derivers = this.db.queryValidDerivers(path);
    const info = this.db.queryPathInfo(path);
    if (info?.deriver && this.db.isValid(info.deriver) && !derivers.some((d) => d.equals(info.deriver!))) derivers.push(info.deriver);
    return derivers;
  }

  async queryDerivationOutputs(drvPath: StorePath): Promise<Map<string, StorePath>> {
    return this.db.queryDerivationOutputs(drvPath);
  }

  async queryPathFromHashPart(hashPart: string): Promise<StorePath | undefined> {
    return this.db.queryPathFromHashPart(hashPart);
  }

  async narFromPath(path: StorePath): Promise<Readable> {
    if (!this.db.isValid(path)) {
      throw new StrataError('PATH_NOT_VALID', `Cannot read '${this.storeDir.print(path)}': it is not valid in '${this.uri}'`, { value: this.storeDir.print(path) });
    }
    const { dumpPath } = await loadFs();
    return dumpPath(this.realPath(path));
  }

  /** Protects `path` from a concurrent GC for the rest of this process's life. */
  async addTempRoot(path: StorePath): Promise<void> {
    await this.tempRoots?.add(this.storeDir.print(path));
  }

  /**
   * Runs `fn` with the per-path locks of `paths` held (`<real>/<base>.lock`, shared with Nix).
   * `fn` must re-check validity: another process may have finished while we waited.
   */
  async withPathLocks<T>(paths: StorePath[], fn: () => Promise<T>): Promise<T> {
    const locks = await acquirePathLocks(paths.map((p) => `${this.realPath(p)}.lock`));
    try {
      return await fn();
    } finally {
      for (const l of locks) l.release();
    }
  }

  async addFromNar(info: PathInfo, nar: Readable): Promise<void> {
    this.requireWritable(`add '${this.storeDir.print(info.path)}'`);
    this.checkReferencesValid(this.storeDir.print(info.path), info.references, info.path);
    await this.addTempRoot(info.path);
    if (this.db.isValid(info.path)) {
      nar.resume();
      return;
    }
    const { StagingDir, restoreNar } = await loadFs();
    const staging = StagingDir.create(this.config.realStoreDir);
    try {
      const tmp = join(staging.path, 'x');
      const got = await restoreNar(nar, tmp, { canonicalise: true });
      const full = this.storeDir.print(info.path);
      if (!got.narHash.equals(info.narHash)) {
        throw new StrataError('HASH_MISMATCH', `Cannot add '${full}': NAR hash mismatch, declared ${info.narHash.toString('nix32')}, got ${got.narHash.toString('nix32')}`, { value: full });
      }
      if (got.narSize !== info.narSize) {
        throw new StrataError('SIZE_MISMATCH', `Cannot add '${full}': NAR size mismatch, declared ${info.narSize}, got ${got.narSize}`, { value: full });
      }
      if (info.ca) await this.checkContentAddress(info, tmp);
      // As Nix's registerValidPath: a `.drv` from elsewhere must have the output paths its
      // contents give (else a cache could make a build write any path), and gets its rows.
      let registration: Omit<Registration, 'info'> = {};
      if (info.path.isDerivation()) registration = { derivationOutputs: await this.importedDerivationOutputs(tmp, info.path) };
      await this.publish(info, tmp, registration);
    } finally {
      staging.dispose();
    }
  }

  /**
   * Writes the files of an already-registered path whose files are missing (repair): the NAR is
   * verified against the recorded info before the files appear; the row is left as it is.
   */
  async restoreFiles(info: PathInfo, nar: Readable): Promise<void> {
    this.requireWritable(`repair '${this.storeDir.print(info.path)}'`);
    const { StagingDir, restoreNar, removeTree } = await loadFs();
    const staging = StagingDir.create(this.config.realStoreDir);
    try {
      const tmp = join(staging.path, 'x');
      const got = await restoreNar(nar, tmp, { canonicalise: true });
      const full = this.storeDir.print(info.path);
      if (!got.narHash.equals(info.narHash) || got.narSize !== info.narSize) {
        throw new StrataError('HASH_MISMATCH', `Cannot repair '${full}': the NAR does not match the recorded hash and size`, { value: full });
      }
      await this.withPathLocks([info.path], async () => {
        const dest = this.realPath(info.path);
        if (existsSync(dest)) removeTree(dest);
        renameSync(tmp, dest);
      });
    } finally {
      staging.dispose();
    }
  }

  /** Moves a complete, verified object into place under its lock and registers it. */
  private async publish(info: PathInfo, stagedPath: string, registration: Omit<Registration, 'info'> = {}): Promise<void> {
    const { removeTree } = await loadFs();
    await this.withPathLocks([info.path], async () => {
      if (this.db.isValid(info.path)) return; // Someone else finished it while we waited.
      const dest = this.realPath(info.path);
      if (existsSync(dest)) removeTree(dest); // Leftovers of an interrupted add.
      renameSync(stagedPath, dest);
      this.db.register([{ info, ...registration }]);
    });
  }

  /** Every reference other than `subject` itself must be valid already; `what` names it in the error. */
  private checkReferencesValid(what: string, references: StorePath[], subject?: StorePath): void {
    const others = subject ? references.filter((r) => !r.equals(subject)) : references;
    const valid = new Set(this.db.queryValid(others).map((p) => p.baseName));
    const missing = others.find((r) => !valid.has(r.baseName));
    if (missing) {
      throw new StrataError('REFERENCE_INVALID', `Cannot add '${what}': its reference '${this.storeDir.print(missing)}' is not valid`, { value: this.storeDir.print(missing) });
    }
  }

  /** Checks that a declared content address matches the staged files and the path. */
  private async checkContentAddress(info: PathInfo, staged: string): Promise<void> {
    const { checkContentAddress } = await import('./content-check.js');
    await checkContentAddress(this.storeDir, info, staged);
  }

  async addPath(fsPath: string, options: AddPathOptions = {}): Promise<PathInfo> {
    this.requireWritable(`add '${fsPath}'`);
    const name = options.name ?? basename(fsPath);
    const method = options.method ?? 'recursive';
    const algo = options.hashAlgo ?? 'sha256';
    const references = options.references ?? [];
    this.checkReferencesValid(fsPath, references);
    const { StagingDir, restoreNar, dumpPath, hashFile, hashPath } = await loadFs();
    const staging = StagingDir.create(this.config.realStoreDir);
    try {
      const tmp = join(staging.path, 'x');
      const { narHash, narSize } = await restoreNar(dumpPath(fsPath), tmp, { canonicalise: true });
      let caHash: Hash;
      if (method === 'flat') {
        caHash = await hashFile(tmp, algo);
      } else {
        caHash = algo === 'sha256' ? narHash : (await hashPath(tmp, algo)).hash;
      }
      const path = this.storeDir.makeFixedOutputPath(name, caHash, method === 'recursive', references);
      const info: PathInfo = {
        path,
        narHash,
        narSize,
        references: references.filter((r) => !r.equals(path)),
        ultimate: false,
        sigs: [],
        ca: `fixed:${method === 'recursive' ? 'r:' : ''}${caHash.algo}:${caHash.toNix32()}`,
      };
      await this.addTempRoot(path);
      if (!this.db.isValid(path)) await this.publish(info, tmp);
      return this.db.queryPathInfo(path)!;
    } finally {
      staging.dispose();
    }
  }

  async addText(name: string, text: string | Uint8Array, references: StorePath[]): Promise<PathInfo> {
    this.requireWritable(`add text '${name}'`);
    const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
    const contentHash = Hash.of('sha256', bytes);
    const path = this.storeDir.makeTextPath(name, contentHash, references);
    await this.addTempRoot(path);
    const existing = this.db.queryPathInfo(path);
    if (existing) return existing;
    this.checkReferencesValid(this.storeDir.print(path), references, path);
    const { StagingDir, hashPath } = await loadFs();
    const staging = StagingDir.create(this.config.realStoreDir);
    try {
      const tmp = join(staging.path, 'x');
      writeFileSync(tmp, bytes, { mode: 0o444 });
      chmodSync(tmp, 0o444);
      lutimesSync(tmp, 1, 1);
      const { hash: narHash, narSize } = await hashPath(tmp, 'sha256');
      const info: PathInfo = { path, narHash, narSize, references, ultimate: false, sigs: [], ca: `text:sha256:${contentHash.toNix32()}` };
      let derivationOutputs: Map<string, string> | undefined;
      if (path.isDerivation()) derivationOutputs = await this.derivationOutputsOf(Buffer.from(bytes).toString('utf8'), path);
      await this.publish(info, tmp, { derivationOutputs });
      return this.db.queryPathInfo(path)!;
    } finally {
      staging.dispose();
    }
  }

  /** {@link derivationOutputsOf} for a staged `.drv` that arrived as a NAR: any fault is `DRV_INVALID`. */
  private async importedDerivationOutputs(staged: string, drvPath: StorePath): Promise<Map<string, string>> {
    const full = this.storeDir.print(drvPath);
    let text: string;
    try {
      text = readFileSync(staged, 'utf8');
    } catch (e) {
      throw new StrataError('DRV_INVALID', `Cannot add '${full}': it is not a derivation file`, { value: full, cause: e });
    }
    try {
      return await this.derivationOutputsOf(text, drvPath);
    } catch (e) {
      if (e instanceof StrataError) throw e;
      // E.g. an input derivation that is not there (a cycle through itself).
      throw new StrataError('DRV_INVALID', `Cannot add '${full}': its output paths cannot be checked: ${(e as Error).message}`, { value: full, cause: e });
    }
  }

  /** The `DerivationOutputs` rows of a `.drv` being registered (output paths are checked). */
  private async derivationOutputsOf(aterm: string, drvPath: StorePath): Promise<Map<string, string>> {
    const { derivationOutputRows } = await import('./derivation-outputs.js');
    return derivationOutputRows(this, aterm, drvPath);
  }

  async addSignatures(path: StorePath, sigs: string[]): Promise<void> {
    this.requireWritable(`sign '${this.storeDir.print(path)}'`);
    this.db.transaction(() => {
      const info = this.db.queryPathInfo(path);
      if (!info) throw new StrataError('PATH_NOT_VALID', `Cannot sign '${this.storeDir.print(path)}': it is not valid`, { value: this.storeDir.print(path) });
      this.db.updateSigs(path, [...info.sigs, ...sigs]);
    });
  }

  get realStoreDir(): string {
    return this.config.realStoreDir;
  }

  get stateDir(): string {
    return this.config.stateDir;
  }

  get logDir(): string {
    return this.config.logDir;
  }

  /** Registers several already-present objects in one transaction (build outputs, copy-up). */
  async registerValidPaths(batch: Registration[]): Promise<void> {
    this.requireWritable('register paths');
    this.db.register(batch);
  }

  async deletePaths(paths: StorePath[]): Promise<GcResult> {
    this.requireWritable('delete paths');
    const { deletePaths } = await import('./gc.js');
    return deletePaths(this, paths);
  }

  async collectGarbage(options: GcOptions = {}): Promise<GcResult> {
    this.requireWritable('collect garbage');
    const { collectGarbage } = await import('./gc.js');
    return collectGarbage(this, options);
  }

  async verify(options: VerifyOptions = {}): Promise<VerifyResult> {
    const { verifyStore } = await import('./verify.js');
    return verifyStore(this, options);
  }

  async optimise(): Promise<OptimiseResult> {
    this.requireWritable('optimise');
    const { optimiseStore } = await import('./optimise.js');
    return optimiseStore(this);
  }

  async close(): Promise<void> {
    this.tempRoots?.close();
    this.db.close();
    this.bigLock?.release();
    this.bigLock = undefined;
  }
}

export { PathLock };
