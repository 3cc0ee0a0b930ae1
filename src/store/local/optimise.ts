/**
 * `nix-store --optimise`: identical files across the store become hard links to one inode kept
 * in `<real>/.links/<nix32 of the file's NAR sha256>`, the name real Nix 2.8 uses (checked by
 * running it: the NAR hash includes the executable bit, so `x` and non-`x` copies stay apart, and
 * symlinks are linked too, as Linux can hard-link them). Contents and modes are untouched, so no
 * NAR hash changes; directories we had to open are set back to 0555 and mtime 1.
 */
import { chmodSync, linkSync, lstatSync, mkdirSync, readdirSync, renameSync, type Stats, unlinkSync, utimesSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { hashPath } from '../../fs/hash-path.js';
import type { OptimiseResult } from '../store.js';
import type { LocalStore } from './local-store.js';

/** Messages for the user (`skipping suspicious writable file …`). */
export type OptimiseReport = (level: 'info' | 'warn', message: string) => void;

let tempCounter = 0;

/** What one optimisation pass shares: inodes already in `.links`, and the tallies. */
interface Pass {
  store: LocalStore;
  linksDir: string;
  linkedInodes: Set<number>;
  stats: OptimiseResult;
  report?: OptimiseReport | undefined;
}

/** Puts `dir` back to canonical store metadata (Nix's `MakeReadOnly`): 0555 and mtime 1. */
function makeReadOnly(dir: string): void {
  chmodSync(dir, 0o555);
  utimesSync(dir, lstatSync(dir).atime, 1);
}

async function optimiseFile(pass: Pass, path: string, st: Stats): Promise<void> {
  if (st.isFile() && st.mode & 0o200) {
    // A writable file in the store was modified behind Nix's back; do not spread it.
    pass.report?.('warn', `skipping suspicious writable file '${path}'`);
    return;
  }
  if (st.nlink > 1 && pass.linkedInodes.has(st.ino)) return; // Already one of ours.
  const hash = (await hashPath(path, 'sha256')).hash.toNix32();
  const linkPath = join(pass.linksDir, hash);

  let stLink: Stats | undefined;
  try {
    stLink = lstatSync(linkPath);
  } catch {
    stLink = undefined;
  }
  if (stLink && stLink.size !== st.size) {
    pass.report?.('warn', `removing corrupted link '${linkPath}'`);
    unlinkSync(linkPath);
    stLink = undefined;
  }
  if (!stLink) {
    try {
      linkSync(path, linkPath);
      pass.linkedInodes.add(st.ino);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // ENOSPC on ext4 means a full directory index: dedup of this file is simply off.
      if (code === 'ENOSPC') {
        pass.report?.('info', `cannot link '${linkPath}' to '${path}': ${(e as Error).message}`);
        return;
      }
      if (code !== 'EEXIST') throw e; // EEXIST: another optimiser won the race; use its link.
    }
    stLink = lstatSync(linkPath);
  }
  if (stLink.ino === st.ino) return;

  // The store dir itself stays as it is; the object's own dirs are 0555 and must open briefly.
  const parent = dirname(path);
  const toggle = parent !== pass.store.config.realStoreDir;
  if (toggle) chmodSync(parent, lstatSync(parent).mode | 0o200);
  try {
    const tempLink = join(pass.store.config.realStoreDir, `.tmp-link-${process.pid}-${tempCounter++}`);
    try {
      linkSync(linkPath, tempLink);
    } catch (e) {
      // EMLINK: the inode has the file system's maximum of links (65000 on ext4), common for
      // empty files; leave this copy alone.
      if ((e as NodeJS.ErrnoException).code === 'EMLINK') {
        if (st.size > 0) pass.report?.('info', `'${linkPath}' has maximum number of links`);
        return;
      }
      throw e;
    }
    try {
      renameSync(tempLink, path); // Atomic: readers see the old file or the link, never nothing.
    } catch (e) {
      try {
        unlinkSync(tempLink);
      } catch {
        pass.report?.('warn', `unable to unlink '${tempLink}'`);
      }
      if ((e as NodeJS.ErrnoException).code === 'EMLINK') return;
      throw e;
    }
  } finally {
    if (toggle) makeReadOnly(parent);
  }
  pass.stats.filesLinked++;
  pass.stats.bytesSaved += st.size;
}

async function optimisePath(pass: Pass, path: string): Promise<void> {
  const st = lstatSync(path);
  if (st.isDirectory()) {
    for (const name of readdirSync(path)) {
      const child = join(path, name);
      await optimisePath(pass, child);
    }
    return;
  }
  if (st.isFile() || st.isSymbolicLink()) await optimiseFile(pass, path, st);
}

/**
 * Deduplicates every valid path of the store through `.links`; returns how many files became
 * links and the bytes that saved.
 *
 * @example
 * ```ts
 * const { filesLinked, bytesSaved } = await optimiseStore(store);
 * ```
 */
export async function optimiseStore(store: LocalStore, options: { report?: OptimiseReport } = {}): Promise<OptimiseResult> {
  store.requireWritable('optimise');
  const linksDir = join(store.config.realStoreDir, '.links');
  mkdirSync(linksDir, { recursive: true });
  // Inodes already in .links are skipped without hashing (Nix's `loadInodeHash`).
  const linkedInodes = new Set<number>();
  for (const name of readdirSync(linksDir)) {
    try {
      linkedInodes.add(lstatSync(join(linksDir, name)).ino);
    } catch {
      // Removed by a concurrent GC.
    }
  }
  const pass: Pass = { store, linksDir, linkedInodes, stats: { filesLinked: 0, bytesSaved: 0 }, report: options.report };
  for (const p of store.db.queryAllValid()) {
    // A temp root keeps a concurrent GC from deleting the path under us.
    await store.addTempRoot(p);
    if (!store.db.isValid(p)) continue;
    await optimisePath(pass, store.realPath(p));
  }
  return pass.stats;
}
