/**
 * Garbage collector roots, found where Nix 2.8 looks for them:
 * - permanent roots: symlinks and marker files under `<state>/gcroots` and `<state>/profiles`;
 * - runtime roots: store paths a running process uses (`/proc/<pid>/{exe,cwd,fd/*,maps,environ}`);
 * - temp roots: `<state>/temproots/<pid>`, paths a live process is adding right now.
 *
 * For a chroot store (`--store /tmp/root`) the logical store dir (`/nix/store`) is what links and
 * Nix's own files name, while running processes see the real dir (`/tmp/root/nix/store`); both are
 * matched, so a process running `/tmp/root/nix/store/<hash>-x/bin/y` keeps `<hash>-x` alive.
 */
import { lstatSync, openSync, readdirSync, readFileSync, readlinkSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

import { StorePath } from '../../core/store-path.js';
import type { LocalStore } from './local-store.js';
import { closeFd, tryLockFd } from './flock.js';
import { lexists } from '../../fs/exists.js';

/** Store path base name → the places that root it (link paths, `/proc/<pid>/exe`, `{temp:<pid>}`). */
export type RootMap = Map<string, { path: StorePath; links: Set<string> }>;

/** Where roots are read from, and whether finding them may tidy up (stale links, dead temp-roots files). */
export interface FindRootsOptions {
  /** Remove stale `gcroots/auto` links and dead processes' temp-roots files, as Nix does (default: store is writable). */
  removeStale?: boolean;
  /** Where to scan for running processes (default `/proc`; tests may point elsewhere). */
  procDir?: string;
  /** Messages for the user (`removing stale link …`); the library never prints. */
  report?: (message: string) => void;
  /** Told of each permanent root whose path was not valid when it was read (it is skipped). */
  onInvalidRoot?: (path: StorePath) => void;
}

function addRoot(roots: RootMap, path: StorePath, link: string): void {
  const entry = roots.get(path.baseName);
  if (entry) entry.links.add(link);
  else roots.set(path.baseName, { path, links: new Set([link]) });
}

/** The base name of the store object `target` points into, when it points into the store (logical or real dir). */
export function storeBaseNameOf(store: LocalStore, target: string): string | undefined {
  for (const dir of new Set([store.config.storeDir, store.config.realStoreDir])) {
    if (target.startsWith(`${dir}/`)) {
      const base = target.slice(dir.length + 1).split('/')[0];
      return base && base.length > 0 ? base : undefined;
    }
  }
  return undefined;
}

function parseBase(base: string | undefined): StorePath | undefined {
  if (base === undefined) return undefined;
  try {
    return StorePath.fromBaseName(base);
  } catch {
    return undefined;
  }
}

const PERMANENT_ERRORS = new Set(['EACCES', 'ENOENT', 'ENOTDIR', 'ELOOP']);

/**
 * Scans `<state>/gcroots` and `<state>/profiles` recursively, as Nix's `findRoots(path)` does:
 * a symlink into the store is a direct root; a symlink elsewhere whose target is itself a symlink
 * into the store is an indirect root (reported under the target, the user's `result` link); a
 * regular file named like a store path roots that path. Only valid paths count.
 */
export function findPermanentRoots(store: LocalStore, options: FindRootsOptions = {}): RootMap {
  const roots: RootMap = new Map();
  const removeStale = options.removeStale ?? !store.config.readOnly;
  const autoDir = join(store.config.stateDir, 'gcroots', 'auto');
  const found = (link: string, target: string): void => {
    const path = parseBase(storeBaseNameOf(store, target));
    if (path === undefined) return;
    if (store.db.isValid(path)) addRoot(roots, path, link);
    else {
      options.report?.(`skipping invalid root from '${link}' to '${target}'`);
      options.onInvalidRoot?.(path);
    }
  };
  const visit = (p: string): void => {
    try {
      const st = lstatSync(p);
      if (st.isDirectory()) {
        for (const name of readdirSync(p)) visit(join(p, name));
      } else if (st.isSymbolicLink()) {
        const target = readlinkSync(p);
        if (storeBaseNameOf(store, target) !== undefined) return found(p, target);
        const abs = resolve(dirname(p), target);
        if (!lexists(abs)) {
          if (removeStale && abs !== autoDir && p.startsWith(`${autoDir}/`)) {
            options.report?.(`removing stale link from '${p}' to '${abs}'`);
            unlinkSync(p);
          }
          return;
        }
        if (!lstatSync(abs).isSymbolicLink()) return;
        const target2 = readlinkSync(abs);
        if (storeBaseNameOf(store, target2) !== undefined) found(abs, target2);
      } else if (st.isFile()) {
        const path = parseBase(p.slice(p.lastIndexOf('/') + 1));
        if (path && store.db.isValid(path)) addRoot(roots, path, p);
      }
    } catch (e) {
      // Nix ignores only permanent failures (a root vanishing or unreadable); others are real.
      const code = (e as NodeJS.ErrnoException).code;
      if (code && PERMANENT_ERRORS.has(code)) options.report?.(`cannot read potential root '${p}'`);
      else throw e;
    }
  };
  visit(join(store.config.stateDir, 'gcroots'));
  visit(join(store.config.stateDir, 'profiles'));
  return roots;
}


// The same shape Nix 2.8 matches: a maps line's sixth field is the mapped file.
const MAPS_LINE = /^\s*\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+(\/\S+)\s*$/;

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Store paths in use by running processes: the targets of `/proc/<pid>/{exe,cwd,fd/*}`, the
 * files mapped in `/proc/<pid>/maps` and store paths named in `/proc/<pid>/environ` (plus the
 * kernel's `modprobe`, `fbsplash` and `poweroff_cmd` helpers). Only valid paths count.
 */
export function findRuntimeRoots(store: LocalStore, options: FindRootsOptions = {}): RootMap {
  const procDir = options.procDir ?? '/proc';
  const unchecked = new Map<string, Set<string>>();
  const note = (target: string, link: string): void => {
    const base = storeBaseNameOf(store, target);
    if (base === undefined) return;
    const set = unchecked.get(base);
    if (set) set.add(link);
    else unchecked.set(base, new Set([link]));
  };
  const dirs = [...new Set([store.config.storeDir, store.config.realStoreDir])];
  const envPath = new RegExp(`(?:${dirs.map(escapeRegExp).join('|')})/[0-9a-z]+[0-9a-zA-Z+\\-._?=]*`, 'g');
  const readLink = (link: string): void => {
    try {
      note(readlinkSync(link), link);
    } catch {
      // The process exited, or we may not look (EACCES): Nix skips these too.
    }
  };
  let pids: string[] = [];
  try {
    pids = readdirSync(procDir).filter((n) => /^\d+$/.test(n));
  } catch {
    // No /proc (non-Linux): no runtime roots.
  }
  for (const pid of pids) {
    const base = join(procDir, pid);
    readLink(join(base, 'exe'));
    readLink(join(base, 'cwd'));
    try {
      for (const fd of readdirSync(join(base, 'fd'))) if (!fd.startsWith('.')) readLink(join(base, 'fd', fd));
    } catch {
      // Exited or not ours to read.
    }
    try {
      const mapFile = join(base, 'maps');
      for (const line of readFileSync(mapFile, 'latin1').split('\n')) {
        const m = MAPS_LINE.exec(line);
        if (m) note(m[1]!, mapFile);
      }
    } catch {
      // As above.
    }
    try {
      const envFile = join(base, 'environ');
      for (const m of readFileSync(envFile, 'latin1').matchAll(envPath)) note(m[0], envFile);
    } catch {
      // As above.
    }
  }
  for (const f of ['sys/kernel/modprobe', 'sys/kernel/fbsplash', 'sys/kernel/poweroff_cmd']) {
    try {
      const file = join(procDir, f);
      note(readFileSync(file, 'latin1').trim(), file);
    } catch {
      // Absent on this kernel.
    }
  }
  const roots: RootMap = new Map();
  for (const [base, links] of unchecked) {
    const path = parseBase(base);
    if (!path || !store.db.isValid(path)) continue;
    for (const l of links) addRoot(roots, path, l);
  }
  return roots;
}

/**
 * Temp roots of live processes (`<state>/temproots/<pid>`, NUL-separated full paths). A file we
 * can lock exclusively belongs to a dead process: with `removeStale` it is unlinked and marked
 * with `d` (so an owner racing to reopen it retries), and its roots are ignored. Temp roots need
 * not be valid yet: they protect paths being added, and match by hash part.
 */
export function findTempRoots(store: LocalStore, options: FindRootsOptions = {}): RootMap {
  const roots: RootMap = new Map();
  const dir = join(store.config.stateDir, 'temproots');
  const removeStale = options.removeStale ?? !store.config.readOnly;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return roots;
  }
  for (const name of names) {
    if (name.startsWith('.')) continue; // Hidden files keep the dir alive for some package managers.
    const file = join(dir, name);
    let fd: number;
    try {
      fd = openSync(file, removeStale ? 'r+' : 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw e;
    }
    try {
      if (tryLockFd(fd, 'exclusive')) {
        // Its owner is gone (the owner holds the lock for its whole life).
        if (removeStale) {
          options.report?.(`removing stale temporary roots file '${file}'`);
          try {
            unlinkSync(file);
          } catch {
            // Someone else tidied it.
          }
          writeSync(fd, 'd');
        }
        continue;
      }
      const text = readFileSync(fd, 'utf8');
      for (const full of text.split('\0')) {
        if (full.length === 0) continue;
        const path = parseBase(storeBaseNameOf(store, full));
        if (path) addRoot(roots, path, `{temp:${name}}`);
      }
    } finally {
      closeFd(fd);
    }
  }
  return roots;
}

/** Merges root maps into the first. */
export function mergeRoots(into: RootMap, ...others: RootMap[]): RootMap {
  for (const m of others) for (const { path, links } of m.values()) for (const l of links) addRoot(into, path, l);
  return into;
}

/**
 * Every root of the store, as `nix-store --gc --print-roots` and `nix-store -q --roots` see them:
 * full store path → sorted root locations (link paths, `/proc/<pid>/…`, `{temp:<pid>}`).
 *
 * @example
 * ```ts
 * for (const [path, links] of await findRoots(store)) for (const l of links) console.log(`${l} -> ${path}`);
 * ```
 */
export async function findRoots(store: LocalStore, options: FindRootsOptions = {}): Promise<Map<string, string[]>> {
  const all = mergeRoots(findPermanentRoots(store, options), findRuntimeRoots(store, options), findTempRoots(store, options));
  const out = new Map<string, string[]>();
  for (const { path, links } of [...all.values()].sort((a, b) => (a.path.baseName < b.path.baseName ? -1 : 1))) {
    out.set(store.storeDir.print(path), [...links].sort());
  }
  return out;
}

/** True when `file` exists and another process holds a lock on it (a path lock, a temp dir). */
export function isLockedByOther(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return false;
  }
  try {
    return !tryLockFd(fd, 'exclusive');
  } finally {
    closeFd(fd);
  }
}
