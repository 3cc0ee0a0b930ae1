/**
 * `nix-store --verify [--check-contents] [--repair]` for a local store, following Nix 2.8:
 * - every valid path must exist in the real store dir. A missing path that no valid path refers
 *   to is removed from the database (Nix does this even without `--repair`, and it is not an
 *   error); one that still has valid referrers is an error;
 * - with `checkContents`, every existing path is re-hashed and its NAR hash compared with the
 *   database (`path '…' was modified! expected hash '…', got '…'`); an all-zero hash or a zero
 *   narSize (old stores) is filled in instead;
 * - with `checkContents`, every `.links` entry must still hash to its name; `repair` removes a
 *   corrupt one (the store objects sharing it are reported by the hash check);
 * - `repair` puts back broken paths through `repairFrom` (a substituter whose NAR matches the
 *   recorded hash), and says which it cannot.
 * `gc.lock` is held shared so no collection runs meanwhile; a read-only store takes no lock and
 * changes nothing.
 */
import { readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

import type { StorePath } from '../../core/store-path.js';
import { hashPath } from '../../fs/hash-path.js';
import type { VerifyOptions, VerifyResult } from '../store.js';
import { closeFd, lockFd, openLockFile, tryLockFd } from './flock.js';
import type { LocalStore } from './local-store.js';

/** {@link VerifyOptions} plus a channel for the messages Nix prints. */
export interface LocalVerifyOptions extends VerifyOptions {
  report?: (level: 'info' | 'warn' | 'error', message: string) => void;
  /**
   * With `repair`: puts back a broken path's files from a substituter (the NAR must match the
   * recorded hash, so no signature is needed); true when it did.
   */
  repairFrom?: ((path: StorePath) => Promise<boolean>) | undefined;
}

/** {@link VerifyResult} plus what verification changed in the database. */
export interface LocalVerifyResult extends VerifyResult {
  /** Missing paths without valid referrers, removed from the database (as Nix does). */
  invalidated: StorePath[];
  /** Paths whose missing hash or size was filled in. */
  updated: StorePath[];
  /** Every problem, one line each, in Nix's wording. */
  errors: string[];
}

/**
 * Verifies the store; `ok` is false exactly when `nix-store --verify` would exit 1.
 *
 * @example
 * ```ts
 * const r = await verifyStore(store, { checkContents: true });
 * if (!r.ok) for (const line of r.errors) console.error(line);
 * ```
 */
export async function verifyStore(store: LocalStore, options: LocalVerifyOptions = {}): Promise<LocalVerifyResult> {
  const report = options.report;
  const readOnly = store.config.readOnly;
  let lockFdNo = -1;
  if (!readOnly) {
    lockFdNo = openLockFile(join(store.config.stateDir, 'gc.lock'));
    if (!tryLockFd(lockFdNo, 'shared')) {
      report?.('info', 'waiting for the big garbage collector lock...');
      await lockFd(lockFdNo, 'shared');
    }
  }
  try {
    return await verifyLocked(store, options, readOnly);
  } finally {
    if (lockFdNo >= 0) closeFd(lockFdNo);
  }
}

async function verifyLocked(store: LocalStore, options: LocalVerifyOptions, readOnly: boolean): Promise<LocalVerifyResult> {
  const report = options.report;
  const dir = store.storeDir;
  const result: LocalVerifyResult = { modified: [], missing: [], repaired: [], ok: true, invalidated: [], updated: [], errors: [] };
  const fail = (message: string): void => {
    result.errors.push(message);
    result.ok = false;
    report?.('error', message);
  };
  // As in Nix, a problem that --repair fixes is reported but does not fail the verification.
  const toRepair: Array<{ path: StorePath; problem: string }> = [];
  const problem = (p: StorePath, message: string): void => {
    if (options.repair && !readOnly) {
      toRepair.push({ path: p, problem: message });
      report?.('error', message);
    } else fail(message);
  };

  report?.('info', 'reading the Nix store...');
  // Existence is judged from one listing, as Nix does: a consistent snapshot, one syscall.
  const present = new Set(readdirSync(store.config.realStoreDir));

  report?.('info', 'checking path existence...');
  const done = new Set<string>();
  const existing = new Map<string, StorePath>();
  // Missing paths already judged removable (needed in read-only mode, where rows stay).
  const canGo = new Set<string>();
  const verifyPath = (p: StorePath): void => {
    if (done.has(p.baseName)) return;
    done.add(p.baseName);
    if (present.has(p.baseName)) {
      existing.set(p.baseName, p);
      return;
    }
    result.missing.push(p);
    // Referrers first: if they can all go, this one can go too.
    let canInvalidate = true;
    for (const r of store.db.queryReferrers(p)) {
      if (r.equals(p)) continue;
      verifyPath(r);
      if (existing.has(r.baseName) || (store.db.isValid(r) && !canGo.has(r.baseName))) canInvalidate = false;
    }
    if (canInvalidate && !readOnly) {
      report?.('info', `path '${dir.print(p)}' disappeared, removing from database...`);
      store.db.invalidate(p);
      result.invalidated.push(p);
      canGo.add(p.baseName);
    } else if (canInvalidate) {
      canGo.add(p.baseName);
      fail(`path '${dir.print(p)}' disappeared, but the store is read-only`);
    } else {
      problem(p, `path '${dir.print(p)}' disappeared, but it still has valid referrers!`);
    }
  };
  for (const p of store.db.queryAllValid()) verifyPath(p);

  if (options.checkContents) {
    await checkLinks(store, options, readOnly, fail);
    report?.('info', 'checking store hashes...');
    for (const p of [...existing.values()].sort((a, b) => (a.baseName < b.baseName ? -1 : 1))) {
      const info = store.db.queryPathInfo(p);
      if (!info) continue; // Collected meanwhile (only possible without the lock).
      let current;
      try {
        current = await hashPath(store.realPath(p), 'sha256');
      } catch (e) {
        fail(`cannot check contents of '${dir.print(p)}': ${(e as Error).message}`);
        continue;
      }
      const nullHash = info.narHash.bytes.every((b) => b === 0);
      if (!nullHash && !info.narHash.equals(current.hash)) {
        result.modified.push(p);
        problem(p, `path '${dir.print(p)}' was modified! expected hash '${info.narHash.toString('nix32')}', got '${current.hash.toString('nix32')}'`);
        continue;
      }
      if (!nullHash && info.narSize !== 0 && info.narSize !== current.narSize) {
        result.modified.push(p);
        problem(p, `path '${dir.print(p)}' was modified! expected size ${info.narSize}, got ${current.narSize}`);
        continue;
      }
      if ((nullHash || info.narSize === 0) && !readOnly) {
        // Old or foreign databases: fill in what is missing, as Nix does.
        if (nullHash) report?.('info', `fixing missing hash on '${dir.print(p)}'`);
        if (info.narSize === 0) report?.('info', `updating size field on '${dir.print(p)}' to ${current.narSize}`);
        store.db.register([{ info: { ...info, narHash: current.hash, narSize: current.narSize } }]);
        result.updated.push(p);
      }
    }
  }
  for (const { path } of toRepair) {
    let repaired = false;
    try {
      repaired = (await options.repairFrom?.(path)) ?? false;
    } catch (e) {
      report?.('warn', `repairing '${dir.print(path)}' failed: ${(e as Error).message}`);
    }
    if (repaired) {
      result.repaired.push(path);
      report?.('info', `repaired path '${dir.print(path)}'`);
    } else fail(`cannot repair path '${dir.print(path)}': no substituter can provide it`);
  }
  return result;
}

/** Nix 2.8's "checking link hashes": a `.links` entry is named by its NAR hash. */
async function checkLinks(store: LocalStore, options: LocalVerifyOptions, readOnly: boolean, fail: (m: string) => void): Promise<void> {
  const linksDir = join(store.config.realStoreDir, '.links');
  let names: string[];
  try {
    names = readdirSync(linksDir);
  } catch {
    return;
  }
  options.report?.('info', 'checking link hashes...');
  for (const name of names.sort()) {
    const linkPath = join(linksDir, name);
    let got: string;
    try {
      got = (await hashPath(linkPath, 'sha256')).hash.toNix32();
    } catch {
      continue; // Removed by a concurrent optimiser or GC.
    }
    if (got === name) continue;
    if (options.repair && !readOnly) {
      unlinkSync(linkPath);
      options.report?.('info', `removed link '${linkPath}'`);
    } else {
      fail(`link '${linkPath}' was modified! expected hash '${name}', got '${got}'`);
    }
  }
}
