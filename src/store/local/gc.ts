/**
 * Garbage collection of a local store, as Nix 2.8 does it (its 2021 rewrite; spec §17):
 * hold `<state>/gc.lock` exclusively, collect the roots, then walk the real store dir and, for
 * each store path, its referrer closure: if nothing in it is alive, delete it all, referrers
 * before references (invalidate the DB row, then remove the files). Entries that are not store
 * paths are junk and are deleted too, except locked `tmp-*` dirs and held `.lock` files. Bytes
 * freed are counted the way Nix counts them, so both report the same number for the same store.
 */
import { chmodSync, lstatSync, mkdirSync, opendirSync, openSync, readdirSync, rmdirSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';

import { StrataError } from '../../core/error.js';
import { StorePath, sortStorePaths } from '../../core/store-path.js';
import type { GcOptions, GcResult } from '../store.js';
import { closeFd, lockFd, openLockFile, tryLockFd } from './flock.js';
import type { LocalStore } from './local-store.js';
import { findPermanentRoots, findRuntimeRoots, findTempRoots, isLockedByOther, mergeRoots, storeBaseNameOf } from './roots.js';

/** Progress and notes for the user, in Nix's words (`deleting '/nix/store/…'`). */
export type GcReport = (level: 'info' | 'warn', message: string) => void;

/** {@link GcOptions} plus what only a local store has. */
export interface LocalGcOptions extends GcOptions {
  report?: GcReport;
  /** A live output keeps its `.drv` alive (Nix's `keep-derivations`, default true). */
  keepDerivations?: boolean;
  /** A live `.drv` keeps its outputs alive (Nix's `keep-outputs`, default false). */
  keepOutputs?: boolean;
  /** Where to look for running processes (default `/proc`). */
  procDir?: string;
}

/** {@link GcResult} plus the local details the CLI reports. */
export interface LocalGcResult extends GcResult {
  /** Store-dir entries that are not store paths (`foo`, `tmp-*`, stray files), deleted or (dry run) deletable, as full paths. */
  junk: string[];
  /** `.links` entries no longer used by any store object, removed after deleting. */
  linksRemoved: number;
  /** Bytes the remaining hard links save (Nix's closing "hard linking saves" note). */
  linkSavings: number;
}

class LimitReached extends Error {}

/**
 * Nix's size rule (2.8 `_deletePath`): a non-directory counts its size when its link count is 1
 * (last link) or 2 (assumed to be the other half of a `.links` pair); directories count nothing.
 */
function deleteCounting(path: string): number {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw e;
  }
  let freed = 0;
  if (st.isDirectory()) {
    // Store dirs are 0555: the owner needs rwx to unlink the children.
    if ((st.mode & 0o700) !== 0o700) chmodSync(path, (st.mode & 0o7777) | 0o700);
    for (const name of readdirSync(path)) freed += deleteCounting(join(path, name));
    rmdirSync(path);
  } else {
    if (st.nlink === 1 || st.nlink === 2) freed += st.size;
    try {
      unlinkSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  return freed;
}

/** `%.2f MiB` exactly as printf rounds it (ties to even), which is how Nix shows sizes. */
export function showMiB(bytes: number): string {
  const hundredths = (bytes * 100) / (1024 * 1024);
  const floor = Math.floor(hundredths);
  let n = hundredths - floor === 0.5 ? (floor % 2 === 0 ? floor : floor + 1) : Math.round(hundredths);
  if (Object.is(n, -0)) n = 0;
  const s = (Math.abs(n) / 100).toFixed(2);
  return `${n < 0 || (n === 0 && bytes < 0) ? '-' : ''}${s} MiB`;
}

/** One collection's state: which paths are known alive or dead, and what was freed. */
class Collector {
  readonly roots = new Set<string>();
  readonly tempHashes = new Set<string>();
  /** Targets of root links that were not valid when the roots were read (see `rooted`). */
  readonly laterRoots = new Set<string>();
  readonly alive = new Set<string>();
  readonly dead = new Map<string, StorePath>();
  readonly deleted: StorePath[] = [];
  readonly junk: string[] = [];
  bytesFreed = 0;
  private readonly referrersCache = new Map<string, StorePath[]>();
  private readonly keepDerivations: boolean;
  private readonly keepOutputs: boolean;
  private readonly maxFreed: number;

  constructor(
    private readonly store: LocalStore,
    private readonly options: LocalGcOptions,
    private readonly shouldDelete: boolean,
    private readonly specific?: Set<string>,
  ) {
    this.keepDerivations = options.keepDerivations ?? true;
    this.keepOutputs = options.keepOutputs ?? false;
    this.maxFreed = options.maxFreed ?? Number.POSITIVE_INFINITY;
  }

  private get db() {
    return this.store.db;
  }

  private print(p: StorePath): string {
    return this.store.storeDir.print(p);
  }

  /** Reads the permanent (unless asked not to), runtime and temp roots. */
  collectRoots(): void {
    const o = {
      procDir: this.options.procDir,
      report: (m: string) => this.options.report?.('info', m),
      onInvalidRoot: (p: StorePath) => this.laterRoots.add(p.baseName),
    };
    const permanent = mergeRoots(findPermanentRoots(this.store, o), findRuntimeRoots(this.store, o));
    for (const { path } of permanent.values()) this.roots.add(path.baseName);
    for (const { path } of findTempRoots(this.store, o).values()) {
      this.roots.add(path.baseName);
      this.tempHashes.add(path.hashPart);
    }
  }

  /**
   * Whether `p` is rooted: a root when the roots were read, or the target of a root link that was
   * not valid then and is now (registered while we run: a build's output that its gcroot already
   * named; found by the torture suite, RELIABILITY.md). Keeping it is always safe.
   */
  private rooted(p: StorePath): boolean {
    return this.roots.has(p.baseName) || (this.laterRoots.has(p.baseName) && this.db.isValid(p));
  }

  /** A root reported by a process through the roots socket while we run. */
  addTempRoot(hashPart: string): void {
    this.tempHashes.add(hashPart);
  }

  /**
   * Someone is adding or building it: the temp root matches by hash part (so `.lock` siblings are
   * covered), and a held `<base>.lock` means a writer is inside its critical section.
   */
  private inUse(p: StorePath): boolean {
    const real = this.store.realPath(p);
    return this.tempHashes.has(p.hashPart) || isLockedByOther(`${real}.lock`) || (p.name.endsWith('.lock') && isLockedByOther(real));
  }

  /** Marks `path` (and `start`) alive together with everything `path` keeps alive. */
  private markAlive(path: StorePath, start: StorePath): void {
    this.alive.add(start.baseName);
    const todo = [path];
    for (let i = 0; i < todo.length; i++) {
      const p = todo[i]!;
      if (this.alive.has(p.baseName) && p !== path) continue; // Its closure is already alive.
      this.alive.add(p.baseName);
      const info = this.db.queryPathInfo(p);
      if (!info) continue; // A temp root not yet valid protects only itself.
      todo.push(...info.references);
      if (this.keepDerivations && info.deriver && this.db.isValid(info.deriver)) todo.push(info.deriver);
      if (this.keepOutputs && p.isDerivation()) {
        for (const out of this.db.queryDerivationOutputs(p).values()) if (this.db.isValid(out)) todo.push(out);
      }
    }
  }

  private referrers(p: StorePath): StorePath[] {
    let r = this.referrersCache.get(p.baseName);
    if (!r) {
      r = this.db.queryReferrers(p);
      this.referrersCache.set(p.baseName, r);
    }
    return r;
  }

  /**
   * Nix's `deleteReferrersClosure`: breadth-first over referrers (and, with keep-derivations, a
   * `.drv`'s outputs; with keep-outputs, a path's derivers). One live path makes the whole start
   * alive; otherwise everything visited is dead and, when deleting, goes now.
   */
  referrerClosure(start: StorePath): void {
    const visited = new Map<string, StorePath>();
    const todo: StorePath[] = [];
    const enqueue = (p: StorePath): void => {
      if (visited.has(p.baseName)) return;
      visited.set(p.baseName, p);
      todo.push(p);
    };
    enqueue(start);
    for (let i = 0; i < todo.length; i++) {
      const path = todo[i]!;
      if (this.alive.has(path.baseName)) {
        this.alive.add(start.baseName);
        return;
      }
      if (this.dead.has(path.baseName)) continue;
      if (this.rooted(path)) return this.markAlive(path, start);
      // Deleting specific paths never spills over to paths the user did not name.
      if (this.specific && !this.specific.has(path.baseName)) return;
      if (this.inUse(path)) return this.markAlive(path, start);
      if (!this.db.isValid(path)) continue;
      for (const r of this.referrers(path)) enqueue(r);
      if (this.keepDerivations && path.isDerivation()) {
        for (const out of this.db.queryDerivationOutputs(path).values()) {
          if (this.db.queryPathInfo(out)?.deriver?.equals(path)) enqueue(out);
        }
      }
      if (this.keepOutputs) for (const d of this.db.queryValidDerivers(path)) enqueue(d);
    }
    for (const p of this.topoSort([...visited.values()])) {
      if (this.dead.has(p.baseName) || this.alive.has(p.baseName)) continue;
      if (!this.shouldDelete) {
        this.dead.set(p.baseName, p);
        continue;
      }
      // Re-checked at the last moment: a root may have arrived through the socket meanwhile, or
      // a rooted path become valid.
      if (this.inUse(p) || this.rooted(p)) {
        this.markAlive(p, p);
        continue;
      }
      if (this.db.isValid(p)) {
        try {
          this.db.invalidate(p);
        } catch (e) {
          // Valid referrers remain: the walk above should have made that impossible, so keep it.
          this.options.report?.('warn', `cannot delete '${this.print(p)}': ${(e as Error).message}`);
          this.markAlive(p, p);
          continue;
        }
      }
      this.dead.set(p.baseName, p);
      this.referrersCache.delete(p.baseName);
      this.deleted.push(p);
      this.removeEntry(p.baseName, p);
    }
  }

  /** Referrers before references, so no row is ever invalidated while another still refers to it. */
  private topoSort(paths: StorePath[]): StorePath[] {
    const byName = new Map(paths.map((p) => [p.baseName, p]));
    const done = new Set<string>();
    const postOrder: StorePath[] = [];
    const visit = (p: StorePath): void => {
      if (done.has(p.baseName)) return;
      done.add(p.baseName);
      for (const r of this.db.queryPathInfo(p)?.references ?? []) {
        const inSet = byName.get(r.baseName);
        if (inSet && r.baseName !== p.baseName) visit(inSet);
      }
      postOrder.push(p);
    };
    for (const p of paths) visit(p);
    return postOrder.reverse();
  }

  /** Deletes one top-level entry of the store dir, counting what it frees. */
  private removeEntry(name: string, path?: StorePath): void {
    const full = `${this.store.config.storeDir}/${name}`;
    const real = join(this.store.config.realStoreDir, name);
    this.options.report?.('info', `deleting '${full}'`);
    try {
      // A layered store deletes per layer (its objectDeleter); a plain one removes the files.
      const deleter = path ? this.store.objectDeleter : undefined;
      this.bytesFreed += deleter ? deleter(path!) : name.endsWith('.lock') ? deleteLockFile(real) : deleteCounting(real);
    } catch (e) {
      // A half-deleted path is invalid now; the next collection removes the rest as junk.
      this.options.report?.('warn', `cannot remove '${real}': ${(e as Error).message}`);
    }
    if (this.bytesFreed > this.maxFreed) {
      this.options.report?.('info', `deleted more than ${this.maxFreed} bytes; stopping`);
      throw new LimitReached();
    }
  }

  /**
   * An entry that is not a store path: delete it, unless it is a `tmp-*` dir someone holds locked
   * (an add in progress) or a `.lock` file someone holds. Never fatal.
   */
  junkEntry(name: string): void {
    const real = join(this.store.config.realStoreDir, name);
    let dirFd = -1;
    try {
      if (name.startsWith('tmp-')) {
        let st;
        try {
          st = lstatSync(real);
        } catch {
          return;
        }
        if (st.isDirectory()) {
          dirFd = openSync(real, 'r');
          if (!tryLockFd(dirFd, 'exclusive')) {
            this.options.report?.('info', `skipping locked temporary directory '${real}'`);
            return;
          }
        }
      } else if (name.endsWith('.lock') && isLockedByOther(real)) {
        return;
      }
      this.junk.push(`${this.store.config.storeDir}/${name}`);
      if (this.shouldDelete) this.removeEntry(name);
    } catch (e) {
      if (e instanceof LimitReached) throw e;
      this.options.report?.('warn', `cannot remove '${real}': ${(e as Error).message}`);
    } finally {
      if (dirFd >= 0) closeFd(dirFd);
    }
  }

  /** Whole-store mode: every entry of the real store dir, in directory order (as Nix reads it). */
  async walkStore(): Promise<void> {
    // A layered store names its own entries: walking the merged dir would visit every lower path.
    const listed = this.store.objectLister?.();
    const dir = listed ? undefined : opendirSync(this.store.config.realStoreDir);
    const next = listed ? (() => { let i = 0; return () => listed[i++] ?? null; })() : () => dir!.readSync()?.name ?? null;
    let n = 0;
    try {
      for (let name = next(); name !== null; name = next()) {
        if (name === '.links') continue;
        const path = parseBaseName(name);
        if (path) this.referrerClosure(path);
        else this.junkEntry(name);
        // Let the roots socket answer clients now and then (every 64 entries: a few ms at most).
        if (++n % 64 === 0) await new Promise((r) => setImmediate(r));
      }
    } catch (e) {
      if (!(e instanceof LimitReached)) throw e;
    } finally {
      dir?.closeSync();
    }
  }

  result(extra: Partial<LocalGcResult> = {}): LocalGcResult {
    return { deleted: this.deleted, bytesFreed: this.bytesFreed, junk: this.junk.sort(), linksRemoved: 0, linkSavings: 0, ...extra };
  }
}

function parseBaseName(name: string): StorePath | undefined {
  try {
    return StorePath.fromBaseName(name);
  } catch {
    return undefined;
  }
}

/**
 * Removes a free lock file the way a releasing holder does: lock it, unlink it, then write `d`
 * into it, so a process that opened it before the unlink sees it is stale and reopens.
 */
function deleteLockFile(real: string): number {
  let fd: number;
  try {
    fd = openSync(real, 'r+');
  } catch {
    return deleteCounting(real); // Not a plain file we can open (a dir named *.lock): just junk.
  }
  try {
    if (!tryLockFd(fd, 'exclusive')) return 0;
    const st = lstatSync(real);
    if (!st.isFile()) return deleteCounting(real);
    unlinkSync(real);
    writeSync(fd, 'd');
    return st.nlink === 1 || st.nlink === 2 ? st.size : 0;
  } finally {
    closeFd(fd);
  }
}

/** Nix's "deleting unused links": `.links` entries with link count 1 belong to no store object now. */
function removeUnusedLinks(store: LocalStore, report?: GcReport): { removed: number; savings: number } {
  const linksDir = join(store.config.realStoreDir, '.links');
  let names: string[];
  try {
    names = readdirSync(linksDir);
  } catch {
    return { removed: 0, savings: 0 };
  }
  report?.('info', 'deleting unused links...');
  let removed = 0;
  let actualSize = 0;
  let unsharedSize = 0;
  for (const name of names) {
    const p = join(linksDir, name);
    try {
      const st = lstatSync(p);
      if (st.nlink !== 1) {
        actualSize += st.size;
        unsharedSize += (st.nlink - 1) * st.size;
        continue;
      }
      unlinkSync(p);
      removed++;
    } catch (e) {
      report?.('warn', `cannot remove unused link '${p}': ${(e as Error).message}`);
    }
  }
  // As Nix: what the links save, less what the links dir itself occupies.
  const overhead = lstatSync(linksDir).blocks * 512;
  const savings = unsharedSize - actualSize - overhead;
  report?.('info', `note: currently hard linking saves ${showMiB(savings)}`);
  return { removed, savings };
}

/**
 * The roots socket (`<state>/gc-socket/socket`): a real Nix process that wants a temp root while
 * we hold `gc.lock` connects, sends `<full store path>\n` and waits for `1`. Without it, Nix
 * clients fail to connect while strata collects. Our deletions are synchronous and the socket is
 * served between them, so a path is never half-deleted when we acknowledge.
 */
async function startRootsServer(store: LocalStore, collector: Collector, report?: GcReport): Promise<() => void> {
  const dir = join(store.config.stateDir, 'gc-socket');
  const socketPath = join(dir, 'socket');
  const conns = new Set<Socket>();
  let server: Server | undefined;
  try {
    mkdirSync(dir, { recursive: true });
    rmSync(socketPath, { force: true });
    server = createServer((conn) => {
      conns.add(conn);
      let buf = '';
      conn.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          const base = storeBaseNameOf(store, line);
          if (base !== undefined && base.length >= 32) collector.addTempRoot(base.slice(0, 32));
          conn.write('1');
        }
      });
      conn.on('error', () => undefined);
      conn.on('close', () => conns.delete(conn));
    });
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(socketPath, () => resolve());
    });
    chmodSync(socketPath, 0o666);
  } catch (e) {
    // E.g. a socket path over 107 bytes: roots then come only from files (writers wait for us).
    report?.('warn', `cannot start the roots server at '${socketPath}': ${(e as Error).message}`);
    server?.close();
    return () => undefined;
  }
  return () => {
    for (const c of conns) c.destroy();
    server!.close();
    rmSync(socketPath, { force: true });
  };
}

/** Runs `fn` holding `<state>/gc.lock` exclusively, with the roots socket served meanwhile. */
async function withGcLock<T>(store: LocalStore, collector: Collector, report: GcReport | undefined, fn: () => Promise<T>): Promise<T> {
  const fd = openLockFile(join(store.config.stateDir, 'gc.lock'));
  try {
    if (!tryLockFd(fd, 'exclusive')) {
      report?.('info', 'waiting for the big garbage collector lock...');
      await lockFd(fd, 'exclusive');
    }
    const stopServer = await startRootsServer(store, collector, report);
    try {
      return await fn();
    } finally {
      stopServer();
    }
  } finally {
    closeFd(fd);
  }
}

/**
 * Collects garbage in the whole store (`nix-store --gc`). With `print` (or `dryRun`) nothing is
 * deleted and `paths` lists the live or dead set (dead by default); `maxFreed` stops the
 * collection once more than that many bytes were freed (0 collects nothing, as in Nix).
 *
 * @example
 * ```ts
 * const { deleted, bytesFreed } = await collectGarbage(store, { report: (_, m) => console.error(m) });
 * ```
 */
export async function collectGarbage(store: LocalStore, options: LocalGcOptions = {}): Promise<LocalGcResult> {
  // Even --print-dead takes gc.lock and drops stale roots: nothing of it on a read-only store.
  store.requireWritable('collect garbage');
  const shouldDelete = !options.dryRun && options.print === undefined;
  const report = options.report;
  const c = new Collector(store, options, shouldDelete);
  return withGcLock(store, c, report, async () => {
    report?.('info', 'finding garbage collector roots...');
    c.collectRoots();
    if ((options.maxFreed ?? 1) > 0) {
      report?.('info', shouldDelete ? 'deleting garbage...' : 'determining live/dead paths...');
      await c.walkStore();
    }
    if (!shouldDelete) {
      const set = options.print === 'live' ? [...c.alive].map((b) => StorePath.fromBaseName(b)) : [...c.dead.values()];
      return c.result({ paths: sortStorePaths(set) });
    }
    const links = removeUnusedLinks(store, report);
    return c.result({ linksRemoved: links.removed, linkSavings: links.savings });
  });
}

/**
 * Deletes exactly `paths` (`nix-store --delete`). Every path must be dead: if any is still alive
 * (rooted, in use, or referred to by a path not being deleted) nothing is deleted.
 *
 * @example
 * ```ts
 * await deletePaths(store, [store.storeDir.parse('/nix/store/…-hello')]);
 * ```
 */
export async function deletePaths(store: LocalStore, paths: StorePath[], options: Pick<LocalGcOptions, 'report' | 'keepDerivations' | 'keepOutputs' | 'procDir'> = {}): Promise<LocalGcResult> {
  store.requireWritable('delete paths');
  const report = options.report;
  const targets = sortStorePaths(new Map(paths.map((p) => [p.baseName, p])).values());
  // As Nix, a path that is not valid is deleted as what is left of it (an interrupted add), or is
  // already gone: deleting twice succeeds. Not through a layered store: the name may be a lower's
  // path, which is not the upper's to delete.
  for (const p of targets) {
    if (store.objectDeleter && !store.db.isValid(p)) {
      const full = store.storeDir.print(p);
      throw new StrataError('PATH_NOT_VALID', `Cannot delete path '${full}': it is not valid`, { value: full });
    }
  }
  const specific = new Set(targets.map((p) => p.baseName));
  const c = new Collector(store, options, true, specific);
  return withGcLock(store, c, report, async () => {
    c.collectRoots();
    // Decide for every path before deleting any, so a refusal leaves the store as it was.
    const probe = new Collector(store, options, false, specific);
    for (const r of c.roots) probe.roots.add(r);
    for (const h of c.tempHashes) probe.tempHashes.add(h);
    for (const r of c.laterRoots) probe.laterRoots.add(r);
    for (const p of targets) {
      probe.referrerClosure(p);
      if (!probe.dead.has(p.baseName)) {
        const full = store.storeDir.print(p);
        throw new StrataError('PATH_ALIVE', `Cannot delete path '${full}' since it is still alive`, {
          value: full,
          hint: `to find out why, use: strata query --roots ${full} and strata query --referrers ${full}`,
        });
      }
    }
    for (const p of targets) c.referrerClosure(p);
    const links = removeUnusedLinks(store, report);
    return c.result({ linksRemoved: links.removed, linkSavings: links.savings });
  });
}
