/**
 * A local Nix store: files under the real store dir, metadata in the Nix database. The same thing
 * real Nix keeps on disk, so either can open what the other wrote.
 */
import { chmodSync, lstatSync, lutimesSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';

import pLimit from 'p-limit';

import { StrataError } from '../../core/error.js';
import { Hash } from '../../core/hash.js';
import { StoreDir, type StorePath } from '../../core/store-path.js';
import { lexists } from '../../fs/exists.js';
import type { TreeWriter } from '../../fs/tree-writer.js';
import type { AddNarsOptions, AddPathOptions, GcOptions, GcResult, LocalFsStore, NarSource, OptimiseResult, PathInfo, Registration, VerifyOptions, VerifyResult } from '../store.js';
import type { LocalStoreConfig } from './config.js';
import type { ContentCheckInputs } from './content-check.js';
import { NixDatabase } from './database.js';
import { EarlyWriteback, makeDurable } from './durable.js';
import { acquirePathLocks, BigLock, lockOrder, PathLock, releaseTaken, TempRoots } from './locks.js';
import type { StagingDir } from './staging.js';

/**
 * The NAR and staging modules (with the NAR parser and writer, 8 ESM files) are loaded when a
 * path is added or read, not when the store opens: a query such as `strata path-info` never
 * needs them, and each module read costs Node 20 about a millisecond of start-up.
 */
let fsModules: Promise<typeof import('../../fs/nar-dump.js') & typeof import('../../fs/hash-path.js') & typeof import('../../fs/nar-restore.js') & typeof import('../../fs/remove-tree.js') & typeof import('../../fs/tree-writer.js') & typeof import('./staging.js')> | undefined;
/** Loaded once and kept: an `import()` per call would resolve the specifiers again every time. */
function loadFs() {
  fsModules ??= Promise.all([import('../../fs/nar-dump.js'), import('../../fs/hash-path.js'), import('../../fs/nar-restore.js'), import('../../fs/remove-tree.js'), import('../../fs/tree-writer.js'), import('./staging.js')]).then(([a, b, c, d, e, f]) => ({ ...a, ...b, ...c, ...d, ...e, ...f }));
  return fsModules;
}

/** Loaded once, when the first content address is checked (a path of a batch asks each time). */
let contentCheck: Promise<typeof import('./content-check.js')> | undefined;

/** An object restored into the staging dir, verified, waiting to be moved into place and registered. */
interface Staged {
  info: PathInfo;
  tmp: string;
  /** File system objects in it (what {@link makeDurable} weighs). */
  nodes: number;
  registration: Omit<Registration, 'info'>;
  /** Moved to its store path (and no longer the staging dir's to remove). */
  placed?: boolean;
}

/** Whether {@link LocalStore.publish} makes the objects durable, and their batch's early write-back. */
interface PublishOptions {
  durable?: boolean;
  early?: EarlyWriteback;
}

/** How objects are restored: with store metadata, into the staging dir (0700, ours alone). */
const CANONICAL = { canonicalise: true, privateParent: true };

export class LocalStore implements LocalFsStore {
  readonly uri: string;
  readonly storeDir: StoreDir;
  readonly config: LocalStoreConfig;
  readonly db: NixDatabase;
  readonly tempRoots: TempRoots | undefined;
  private bigLock: BigLock | undefined;
  /**
   * Where new objects are restored before they are moved into place: one directory shared by
   * the adds in progress (a batch of any size costs one mkdir, flock and removal in the store
   * dir, not one per path), removed as soon as none is, so an idle store leaves no `tmp-*`.
   */
  private staging: StagingDir | undefined;
  private stagingUsers = 0;
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

  /** Refuses a write to a `read-only=true` store (checked where the write happens, CLI or not). */
  requireWritable(action: string): void {
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
    this.requireValid(path);
    const { dumpPath } = await loadFs();
    return dumpPath(this.realPath(path));
  }

  /** {@link narFromPath} in one buffer, for small paths (a copy to another store takes these whole). */
  async narBytes(path: StorePath): Promise<Uint8Array> {
    const narSize = this.db.narSizeOf(path);
    if (narSize === undefined) this.requireValid(path);
    const { dumpPathBytes } = await loadFs();
    return dumpPathBytes(this.realPath(path), narSize);
  }

  private requireValid(path: StorePath): void {
    if (!this.db.isValid(path)) {
      throw new StrataError('PATH_NOT_VALID', `Cannot read '${this.storeDir.print(path)}': it is not valid in '${this.uri}'`, { value: this.storeDir.print(path) });
    }
  }

  /** Protects `path` from a concurrent GC for the rest of this process's life. */
  async addTempRoot(path: StorePath): Promise<void> {
    await this.tempRoots?.add(this.storeDir.print(path));
  }

  /** {@link addTempRoot} for many paths: one `gc.lock` round and one write. */
  async addTempRoots(paths: StorePath[]): Promise<void> {
    await this.tempRoots?.addMany(paths.map((p) => this.storeDir.print(p)));
  }

  /** Runs `fn` with the staging dir (see {@link staging}) held. */
  private async withStaging<T>(fn: (staging: StagingDir) => Promise<T>): Promise<T> {
    this.stagingUsers++;
    try {
      const { StagingDir } = await loadFs();
      this.staging ??= StagingDir.create(this.config.realStoreDir);
      return await fn(this.staging);
    } finally {
      if (--this.stagingUsers === 0) {
        this.staging?.dispose();
        this.staging = undefined;
      }
    }
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
    let opened = false;
    const open = (): Readable => {
      opened = true;
      return nar;
    };
    await this.addFromNars([{ info, nar: open }]);
    if (!opened) nar.resume(); // Valid already: let the source finish sending.
  }

  /**
   * Adds many paths, as Nix's import and substitution do, with each registration guarantee of
   * {@link addFromNar}: temp roots first (one write for the batch), references valid or in the
   * batch, the paths' locks (validity checked again), each NAR restored into the staging dir
   * with canonical metadata and checked against its declared hash, size and content address,
   * then (leftovers deleted) moved into place, made durable once, and registered in one
   * transaction. A crash at any point leaves each path either invalid or complete: nothing is
   * under a store path name before its restore is complete and verified.
   */
  async addFromNars(items: NarSource[], options: AddNarsOptions = {}): Promise<void> {
    if (items.length === 0) return;
    this.requireWritable(`add '${this.storeDir.print(items[0]!.info.path)}'`);
    const list = this.uniqueWithReferences(items);
    await this.addTempRoots(list.map((i) => i.info.path));
    const valid = new Set(this.db.queryValid(list.map((i) => i.info.path)).map((p) => p.baseName));
    const todo = list.filter((i) => !valid.has(i.info.path.baseName));
    if (todo.length === 0) return;
    const { TreeWriter } = await loadFs();
    // The nodes are made on the thread pool while the next NAR is parsed and hashed here.
    const writer = (options.concurrency ?? 1) <= TreeWriter.MAX_RESTORES ? await TreeWriter.open() : undefined;
    // Nix's per-path locks, taken first on the writer's thread (without waiting; what it cannot
    // take is waited for here once the batch is staged): 300 lock files were 30-70 ms of a
    // 300-path substitution's main thread. Validity is checked again under the locks (publishLocked).
    const lockPaths = lockOrder(todo.map((i) => `${this.realPath(i.info.path)}.lock`));
    if (writer) {
      for (const p of lockPaths) writer.lockFile(Buffer.from(p));
      writer.flush();
    }
    let locks: PathLock[] | undefined;
    try {
      await this.withStaging(async (staging) => {
        const staged: Staged[] = [];
        const early = new EarlyWriteback(this.config.realStoreDir);
        try {
          await this.stageNars(staging, staged, todo, options, early, writer);
          locks = await acquirePathLocks(lockPaths, writer?.takeLocks());
          await this.publishLocked(staged, { early });
        } finally {
          await this.discard(staged);
        }
      });
    } finally {
      if (locks) for (const l of locks) l.release();
      else if (writer) {
        // Failed before the locks were handed over: whatever the writer took is released too.
        await writer.abandon();
        releaseTaken(lockPaths, writer.takeLocks());
      }
    }
  }

  /** Restores and verifies each NAR of `todo` into `staging`, recording it in `staged`. */
  private async stageNars(staging: StagingDir, staged: Staged[], todo: NarSource[], options: AddNarsOptions, early: EarlyWriteback, writer: TreeWriter | undefined): Promise<void> {
    const { restoreNar, restoreNarSync } = await loadFs();
    const concurrency = options.concurrency ?? 1;
    const restoreOptions = { ...CANONICAL, umask: process.umask(), writer };
    try {
      await forEachLimited(todo, concurrency, async ({ info, nar }) => {
        const entry: Staged = { info, tmp: staging.entry(), nodes: 0, registration: {} };
        staged.push(entry);
        const source = await nar();
        const got = source instanceof Uint8Array ? restoreNarSync(source, entry.tmp, restoreOptions) : await restoreNar(source, entry.tmp, restoreOptions);
        // A NAR given whole is encoded at once: wait here while the pool is behind (memory), and
        // learn of a failure there before the next item is fetched.
        const behind = writer?.ready();
        if (behind) await behind;
        entry.nodes = got.nodes;
        early.restored(got.nodes);
        const full = this.storeDir.print(info.path);
        if (!got.narHash.equals(info.narHash)) {
          throw new StrataError('HASH_MISMATCH', `Cannot add '${full}': NAR hash mismatch, declared ${info.narHash.toString('nix32')}, got ${got.narHash.toString('nix32')}`, { value: full });
        }
        if (got.narSize !== info.narSize) {
          throw new StrataError('SIZE_MISMATCH', `Cannot add '${full}': NAR size mismatch, declared ${info.narSize}, got ${got.narSize}`, { value: full });
        }
        if (info.ca) {
          const beforeReading = writer && (() => writer.settle());
          await this.checkContentAddress(info, entry.tmp, { narSha256: got.narHash, nar: source instanceof Uint8Array ? source : undefined, beforeReading });
        }
      });
      await writer?.settle();
    } catch (e) {
      await writer?.abandon(); // before the caller removes what was staged
      throw e;
    }
    await this.checkStagedDerivations(staged);
  }

  /**
   * As Nix's registerValidPath: a `.drv` from elsewhere must have the output paths its contents
   * give (else a cache could make a build write any path), and gets its rows. Done once a batch
   * is restored, so input derivations in the batch are read where they are staged.
   */
  private async checkStagedDerivations(staged: Staged[]): Promise<void> {
    const stagedAt = new Map(staged.map((e) => [e.info.path.baseName, e.tmp]));
    for (const e of staged) {
      if (e.info.path.isDerivation()) e.registration = { derivationOutputs: await this.importedDerivationOutputs(e.tmp, e.info.path, stagedAt) };
    }
  }

  /**
   * Adds the paths of a `nix-store --export` stream, as `nix-store --import`: each NAR is
   * restored into the staging dir as it is read (it comes before its path, so it cannot wait for
   * a lock, and holding it in memory would make memory grow with the path), hashed once, and the
   * paths are published in batches (nar-export.ts `BATCH_PATHS`) with every guarantee of
   * {@link addFromNars}: references valid or in the batch, temp roots, locks, validity re-checked,
   * leftovers removed, durable, one transaction. An export declares no NAR hash: as with Nix, the
   * hash is the one of the bytes read. `onAdded` gets each batch's paths once they are valid
   * (already valid ones included); a failure leaves earlier batches valid and nothing of its own.
   * Nothing of a chunk of `source` is kept once the next is asked for, so the source may read
   * every chunk into the same buffer.
   */
  async addFromExport(source: AsyncIterable<Uint8Array>, onAdded: (paths: StorePath[]) => void = () => {}): Promise<StorePath[]> {
    this.requireWritable('import paths');
    const { BATCH_PATHS, exportedInfo, readExport } = await import('../nar-export.js');
    const { startRestore, TreeWriter } = await loadFs();
    const all: StorePath[] = [];
    const writer = await TreeWriter.open();
    await this.withStaging(async (staging) => {
      let batch: Staged[] = [];
      let early = new EarlyWriteback(this.config.realStoreDir);
      /** The staging entry of the NAR being read: a failed restore leaves its removal to us. */
      let current: Pick<Staged, 'tmp'> | undefined;
      const flush = async (): Promise<void> => {
        await writer?.settle();
        const list = this.uniqueWithReferences(batch);
        await this.addTempRoots(list.map((e) => e.info.path));
        await this.checkStagedDerivations(list);
        await this.publish(list, { early });
        await this.discard(batch);
        const paths = list.map((e) => e.info.path);
        batch = [];
        early = new EarlyWriteback(this.config.realStoreDir);
        all.push(...paths);
        onAdded(paths);
      };
      try {
        const options = { ...CANONICAL, umask: process.umask(), writer };
        const sinks = () => {
          current = { tmp: staging.entry() };
          return startRestore(current.tmp, options);
        };
        for await (const e of readExport(source, this.storeDir, sinks)) {
          const { target: tmp, narHash, narSize, nodes } = e.nar;
          batch.push({ info: exportedInfo(e, narHash, narSize), tmp, nodes, registration: {} });
          current = undefined;
          early.restored(nodes);
          if (batch.length >= BATCH_PATHS) await flush();
        }
        if (batch.length > 0) await flush();
      } catch (e) {
        await writer?.abandon(); // before what was staged is removed
        throw e;
      } finally {
        await this.discard(current ? [...batch, current] : batch);
      }
    });
    return all;
  }

  /** Removes what is left of staged objects that were not moved into place. */
  private async discard(staged: Array<Pick<Staged, 'tmp' | 'placed'>>): Promise<void> {
    const rest = staged.filter((e) => !e.placed);
    if (rest.length === 0) return;
    const { removeTree } = await loadFs();
    for (const e of rest) if (lexists(e.tmp)) removeTree(e.tmp);
  }

  /**
   * Writes the files of an already-registered path whose files are missing (repair): the NAR is
   * verified against the recorded info before the files appear; the row is left as it is.
   */
  async restoreFiles(info: PathInfo, nar: Readable): Promise<void> {
    this.requireWritable(`repair '${this.storeDir.print(info.path)}'`);
    const { restoreNar, removeTree } = await loadFs();
    await this.withStaging(async (staging) => {
      const tmp = staging.entry();
      try {
        const got = await restoreNar(nar, tmp, CANONICAL);
        const full = this.storeDir.print(info.path);
        if (!got.narHash.equals(info.narHash) || got.narSize !== info.narSize) {
          throw new StrataError('HASH_MISMATCH', `Cannot repair '${full}': the NAR does not match the recorded hash and size`, { value: full });
        }
        await this.withPathLocks([info.path], async () => {
          const dest = this.realPath(info.path);
          moveIntoPlace(tmp, dest, removeTree);
          await makeDurable(this.config.realStoreDir, [dest], got.nodes);
        });
      } finally {
        if (lexists(tmp)) removeTree(tmp);
      }
    });
  }

  /**
   * Moves complete, verified objects into place under their locks, makes them durable (unless
   * `durable` is false; `early` is the batch's write-back, if it has one), and registers them in
   * one transaction. Paths someone else made valid meanwhile are left to them.
   */
  private async publish(staged: Staged[], options: PublishOptions = {}): Promise<void> {
    if (staged.length === 0) return;
    await this.withPathLocks(
      staged.map((e) => e.info.path),
      () => this.publishLocked(staged, options),
    );
  }

  /** {@link publish} with the paths' locks already held by the caller. */
  private async publishLocked(staged: Staged[], { durable = true, early }: PublishOptions = {}): Promise<void> {
    const valid = new Set(this.db.queryValid(staged.map((e) => e.info.path)).map((p) => p.baseName));
    const fresh = staged.filter((e) => !valid.has(e.info.path.baseName));
    if (fresh.length === 0) return;
    const { removeTree } = await loadFs();
    const dests: string[] = [];
    try {
      for (const e of fresh) {
        const dest = this.realPath(e.info.path);
        moveIntoPlace(e.tmp, dest, removeTree);
        e.placed = true;
        dests.push(dest);
      }
      if (durable) await makeDurable(this.config.realStoreDir, dests, fresh.reduce((n, e) => n + e.nodes, 0), early);
      this.db.register(fresh.map((e) => ({ info: e.info, ...e.registration })));
    } catch (e) {
      // Still under the locks and not valid: nothing may stay under those names.
      for (const d of dests) if (lexists(d)) removeTree(d);
      throw e;
    }
  }

  /** `items` without repeated paths, once every reference is valid or among them (one query). */
  private uniqueWithReferences<T extends { info: PathInfo }>(items: T[]): T[] {
    const unique = new Map<string, T>();
    for (const item of items) if (!unique.has(item.info.path.baseName)) unique.set(item.info.path.baseName, item);
    const list = [...unique.values()];
    this.checkReferencesValid(
      list.map(({ info }) => ({ what: this.storeDir.print(info.path), references: info.references })),
      new Set(unique.keys()),
    );
    return list;
  }

  /**
   * Every reference of `adding` must be valid already or be one of the paths being added
   * (`addingNames`: the batch, or a path's own name for a self-reference); one query for all.
   * `what` names the referrer in the error.
   */
  private checkReferencesValid(adding: Array<{ what: string; references: StorePath[] }>, addingNames = new Set<string>()): void {
    const outside = new Map<string, StorePath>();
    for (const { references } of adding) for (const r of references) if (!addingNames.has(r.baseName)) outside.set(r.baseName, r);
    if (outside.size === 0) return;
    const valid = new Set(this.db.queryValid([...outside.values()]).map((p) => p.baseName));
    for (const { what, references } of adding) {
      const missing = references.find((r) => !addingNames.has(r.baseName) && !valid.has(r.baseName));
      if (missing) {
        throw new StrataError('REFERENCE_INVALID', `Cannot add '${what}': its reference '${this.storeDir.print(missing)}' is not valid`, { value: this.storeDir.print(missing) });
      }
    }
  }

  /** Checks that a declared content address matches the staged files and the path. */
  private async checkContentAddress(info: PathInfo, staged: string, inputs: ContentCheckInputs): Promise<void> {
    const { checkContentAddress } = await (contentCheck ??= import('./content-check.js'));
    await checkContentAddress(this.storeDir, info, staged, inputs);
  }

  async addPath(fsPath: string, options: AddPathOptions = {}): Promise<PathInfo> {
    this.requireWritable(`add '${fsPath}'`);
    const name = options.name ?? basename(fsPath);
    const method = options.method ?? 'recursive';
    const algo = options.hashAlgo ?? 'sha256';
    const references = options.references ?? [];
    this.checkReferencesValid([{ what: fsPath, references }]);
    // Flat hashing reads one file's bytes: a directory or symlink (which Nix 2.8 also refuses)
    // gets a clear error before anything is staged.
    const st = method === 'flat' ? lstatSync(fsPath, { throwIfNoEntry: false }) : undefined;
    if (st && !st.isFile()) {
      throw new StrataError('NOT_A_FILE', `Cannot add '${fsPath}' flat: it is not a regular file`, { value: fsPath });
    }
    const { restoreNar, dumpPath, hashFile, hashPath } = await loadFs();
    return this.withStaging(async (staging) => {
      const tmp = staging.entry();
      let staged: Staged | undefined; // once it may have been moved into place
      try {
        const { narHash, narSize, nodes } = await restoreNar(dumpPath(fsPath), tmp, CANONICAL);
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
        staged = { info, tmp, nodes, registration: {} };
        if (!this.db.isValid(path)) await this.publish([staged]);
        return this.db.queryPathInfo(path)!;
      } finally {
        await this.discard([staged ?? { tmp }]);
      }
    });
  }

  async addText(name: string, text: string | Uint8Array, references: StorePath[]): Promise<PathInfo> {
    this.requireWritable(`add text '${name}'`);
    const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
    const contentHash = Hash.of('sha256', bytes);
    const path = this.storeDir.makeTextPath(name, contentHash, references);
    await this.addTempRoot(path);
    const existing = this.db.queryPathInfo(path);
    if (existing) return existing;
    this.checkReferencesValid([{ what: this.storeDir.print(path), references }], new Set([path.baseName]));
    const { hashPath } = await loadFs();
    return this.withStaging(async (staging) => {
      const tmp = staging.entry();
      let staged: Staged | undefined; // once it may have been moved into place
      try {
        writeFileSync(tmp, bytes, { mode: 0o444 });
        chmodSync(tmp, 0o444);
        lutimesSync(tmp, 1, 1);
        const { hash: narHash, narSize } = await hashPath(tmp, 'sha256');
        const info: PathInfo = { path, narHash, narSize, references, ultimate: false, sigs: [], ca: `text:sha256:${contentHash.toNix32()}` };
        let derivationOutputs: Map<string, string> | undefined;
        if (path.isDerivation()) derivationOutputs = await this.derivationOutputsOf(Buffer.from(bytes).toString('utf8'), path);
        staged = { info, tmp, nodes: 1, registration: { derivationOutputs } };
        // Not synced: a text is written by this process, not imported, and an fsync per text
        // (a .drv, a toFile) made adding 300 of them 2.5x slower on this VM (4.3 to 10-12 ms
        // each) and the 2,000-text GC test 4x slower. Real Nix 2.8 syncs no store object at all.
        await this.publish([staged], { durable: false });
        return this.db.queryPathInfo(path)!;
      } finally {
        await this.discard([staged ?? { tmp }]);
      }
    });
  }

  /** {@link derivationOutputsOf} for a staged `.drv` that arrived as a NAR: any fault is `DRV_INVALID`. */
  private async importedDerivationOutputs(staged: string, drvPath: StorePath, stagedAt: Map<string, string>): Promise<Map<string, string>> {
    const full = this.storeDir.print(drvPath);
    let text: string;
    try {
      text = readFileSync(staged, 'utf8');
    } catch (e) {
      throw new StrataError('DRV_INVALID', `Cannot add '${full}': it is not a derivation file`, { value: full, cause: e });
    }
    try {
      return await this.derivationOutputsOf(text, drvPath, stagedAt);
    } catch (e) {
      if (e instanceof StrataError) throw e;
      // E.g. an input derivation that is not there (a cycle through itself).
      throw new StrataError('DRV_INVALID', `Cannot add '${full}': its output paths cannot be checked: ${(e as Error).message}`, { value: full, cause: e });
    }
  }

  /** The `DerivationOutputs` rows of a `.drv` being registered (output paths are checked). */
  private async derivationOutputsOf(aterm: string, drvPath: StorePath, stagedAt?: Map<string, string>): Promise<Map<string, string>> {
    const { derivationOutputRows } = await import('./derivation-outputs.js');
    return derivationOutputRows(this, aterm, drvPath, stagedAt && ((p) => stagedAt.get(p.baseName) ?? this.realPath(p)));
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
    const { deletePaths } = await import('./gc.js');
    return deletePaths(this, paths);
  }

  async collectGarbage(options: GcOptions = {}): Promise<GcResult> {
    const { collectGarbage } = await import('./gc.js');
    return collectGarbage(this, options);
  }

  async verify(options: VerifyOptions = {}): Promise<VerifyResult> {
    const { verifyStore } = await import('./verify.js');
    return verifyStore(this, options);
  }

  async optimise(): Promise<OptimiseResult> {
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

/** What rename(2) says when something is at the destination that it will not replace. */
const OCCUPIED = new Set(['EEXIST', 'ENOTEMPTY', 'ENOTDIR', 'EISDIR']);

/**
 * Renames a staged object to its store path, under the path's lock and while it is not valid:
 * whatever is there is the leftover of an interrupted add and goes. The rename is tried first
 * (an lstat per path saved: the usual case is an empty slot); rename(2) itself replaces a file
 * or an empty directory and refuses anything else, which is removed before a second try.
 */
function moveIntoPlace(tmp: string, dest: string, removeTree: (path: string) => void): void {
  try {
    renameSync(tmp, dest);
  } catch (e) {
    if (!OCCUPIED.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
    removeTree(dest);
    renameSync(tmp, dest);
  }
}

/**
 * Runs `fn` on every item, at most `limit` at once. After the first failure no new item starts;
 * the running ones settle, then that failure is thrown.
 */
async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const slot = pLimit(Math.max(1, limit));
  let failure: { error: unknown } | undefined;
  const run = async (item: T): Promise<void> => {
    if (failure !== undefined) return;
    try {
      await fn(item);
    } catch (e) {
      failure ??= { error: e };
    }
  };
  await Promise.all(items.map((item) => slot(run, item)));
  if (failure) throw failure.error;
}
