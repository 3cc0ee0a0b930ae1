/**
 * What happens after a builder exits 0 (Nix 2.8's `registerOutputs`): check the outputs exist
 * and nothing else was written, canonicalise, scan references, verify fixed-output hashes, move
 * the outputs into the store and register them all in one transaction.
 */
import { lstatSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';

import { StrataError } from '../core/error.js';
import { type Derivation, isFixedOutput, parseOutputHashAlgo } from '../core/derivation/index.js';
import { Hash, newHasher } from '../core/hash.js';
import { ReferenceScanner } from '../core/references.js';
import type { StorePath } from '../core/store-path.js';
import { hashFile, hashPath } from '../fs/hash-path.js';
import { dumpPath } from '../fs/nar-dump.js';
import { restoreNar } from '../fs/nar-restore.js';
import { removeTree } from '../fs/remove-tree.js';
import { StagingDir } from '../store/local/staging.js';
import type { LocalFsStore, PathInfo } from '../store/store.js';
import { canonicaliseOutput } from './canonicalise.js';
import {
  checkOutputReferences,
  legacyOutputChecks,
  structuredOutputChecks,
} from './output-checks.js';
import { structuredAttrsOf } from './structured-attrs.js';
import { lexists } from '../fs/exists.js';

/** One build's outputs, as found after the builder ran. */
export interface BuiltOutputs {
  drvPath: StorePath;
  drv: Derivation;
  /** Output name → path, every output of the derivation. */
  outputs: Map<string, StorePath>;
  /** Names of outputs that were valid before the build: their new copies are discarded. */
  alreadyValid: Set<string>;
  /** The directory the outputs were written to: the overlay upper, or the real store dir. */
  stagedDir: string;
  /** True when `stagedDir` is an overlay upper: any entry other than an output is an error. */
  checkOutside: boolean;
  /** Upper entries that belong to other builds running in the same namespace. */
  othersOutputs?: ReadonlySet<string> | undefined;
  /** Reference candidates besides the outputs: the closure of the build's inputs. */
  inputClosure: StorePath[];
}

/** True for an overlayfs whiteout (a character device 0/0). */
function isWhiteout(path: string): boolean {
  try {
    const st = lstatSync(path);
    return st.isCharacterDevice() && st.rdev === 0;
  } catch {
    return false;
  }
}

/** NAR hash, size and references of a staged output in one pass over its NAR. */
async function scanOutput(
  staged: string,
  scanner: ReferenceScanner,
): Promise<{ narHash: Hash; narSize: number }> {
  const hasher = newHasher('sha256');
  let narSize = 0;
  for await (const chunk of dumpPath(staged) as AsyncIterable<Buffer>) {
    hasher.update(chunk);
    scanner.update(chunk);
    narSize += chunk.length;
  }
  return { narHash: hasher.digest(), narSize };
}

/**
 * Checks the built outputs and computes their path infos (nothing is moved yet). Throws
 * `BUILD_WROTE_OUTSIDE`, `OUTPUT_MISSING`, `OUTPUT_INVALID`, `HASH_MISMATCH` or
 * `REFERENCE_NOT_ALLOWED`.
 *
 * @example const infos = await checkOutputs(store, built);
 */
export async function checkOutputs(store: LocalFsStore, b: BuiltOutputs): Promise<PathInfo[]> {
  const dir = store.storeDir;
  const drvName = dir.print(b.drvPath);
  if (b.checkOutside) {
    const allowed = new Set([...b.outputs.values()].map((p) => p.baseName));
    for (const e of readdirSync(b.stagedDir).sort()) {
      if (allowed.has(e) || b.othersOutputs?.has(e)) continue;
      const what = isWhiteout(join(b.stagedDir, e)) ? 'deleted' : 'wrote';
      throw new StrataError(
        'BUILD_WROTE_OUTSIDE',
        `Cannot register the outputs of '${drvName}': the builder ${what} '${dir.path}/${e}' outside its outputs`,
        { value: `${dir.path}/${e}` },
      );
    }
  }
  const fresh = [...b.outputs].filter(([name]) => !b.alreadyValid.has(name));
  for (const [, path] of fresh) {
    const staged = join(b.stagedDir, path.baseName);
    if (!lexists(staged) || isWhiteout(staged)) {
      throw new StrataError(
        'OUTPUT_MISSING',
        `Cannot register the outputs of '${drvName}': the builder failed to produce output path '${dir.print(path)}'`,
        { value: dir.print(path) },
      );
    }
    // As Nix: a group- or world-writable output may have been changed by someone else meanwhile.
    const st = lstatSync(staged);
    if (!st.isSymbolicLink() && (st.mode & 0o022) !== 0) {
      throw new StrataError(
        'OUTPUT_INVALID',
        `Cannot register '${dir.print(path)}': it is group- or world-writable (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}), so someone else may have changed it`,
        { value: dir.print(path) },
      );
    }
    canonicaliseOutput(staged, dir.print(path));
  }

  const candidates = new Map<string, StorePath>();
  for (const p of [...b.inputClosure, ...b.outputs.values()]) candidates.set(p.hashPart, p);
  const fixed = isFixedOutput(b.drv);
  const now = Math.floor(Date.now() / 1000);
  const infos: PathInfo[] = [];
  for (const [, path] of fresh) {
    const staged = join(b.stagedDir, path.baseName);
    const scanner = new ReferenceScanner(candidates.keys());
    const { narHash, narSize } = await scanOutput(staged, scanner);
    const references = [...scanner.found()]
      .map((h) => candidates.get(h)!)
      .sort((x, y) => (x.baseName < y.baseName ? -1 : x.baseName > y.baseName ? 1 : 0));
    let ca: string | undefined;
    if (fixed) ca = await checkFixedOutput(b.drv, dir.print(path), staged, narHash, references);
    infos.push({
      path,
      narHash,
      narSize,
      references,
      deriver: b.drvPath,
      registrationTime: now,
      ultimate: true,
      sigs: [],
      ca,
    });
  }
  const attrs = structuredAttrsOf(b.drv.env, drvName);
  const checks = attrs === undefined ? legacyOutputChecks(b.drv) : undefined;
  await checkOutputReferences(store, b.drvPath, b.outputs, infos, (o) =>
    attrs === undefined ? checks : structuredOutputChecks(attrs, o, drvName),
  );
  return infos;
}

/** Verifies a fixed output against the declared hash; returns its content address. */
async function checkFixedOutput(
  drv: Derivation,
  display: string,
  staged: string,
  narHash: Hash,
  references: StorePath[],
): Promise<string> {
  const out = drv.outputs.get('out')!;
  const { method, algo } = parseOutputHashAlgo(out.hashAlgo!);
  if (references.length > 0) {
    throw new StrataError(
      'OUTPUT_INVALID',
      `Cannot register '${display}': a fixed-output derivation must not refer to store paths, but it refers to '${references[0]!.baseName}'`,
      { value: display },
    );
  }
  let got: Hash;
  if (method === 'recursive') {
    got = algo === 'sha256' ? narHash : (await hashPath(staged, algo)).hash;
  } else {
    const st = lstatSync(staged);
    if (!st.isFile() || (st.mode & 0o100) !== 0) {
      throw new StrataError(
        'OUTPUT_INVALID',
        `Cannot register '${display}': it should be a non-executable regular file since recursive hashing is not enabled (outputHashMode=flat)`,
        { value: display },
      );
    }
    got = await hashFile(staged, algo);
  }
  const wanted = new Hash(algo, Buffer.from(out.hash!, 'hex'));
  if (!got.equals(wanted)) {
    throw new StrataError(
      'HASH_MISMATCH',
      `Cannot register '${display}': hash mismatch in fixed-output derivation, specified ${wanted.toSri()} (${wanted.toString('nix32')}), got ${got.toSri()} (${got.toString('nix32')})`,
      {
        value: display,
      },
    );
  }
  const prefix = method === 'recursive' ? 'fixed:r:' : method === 'text' ? 'text:' : 'fixed:';
  return `${prefix}${algo}:${got.toNix32()}`;
}

/**
 * Moves checked outputs from the staging dir into the store and registers them in one
 * transaction. The caller holds the outputs' path locks. Any stale (invalid) object at an output
 * path is replaced; on failure the moved outputs are removed again, so the store is unchanged.
 *
 * @example await publishOutputs(store, built.stagedDir, infos);
 */
export async function publishOutputs(
  store: LocalFsStore,
  stagedDir: string,
  infos: PathInfo[],
): Promise<void> {
  const moved: string[] = [];
  try {
    for (const info of infos) {
      const staged = join(stagedDir, info.path.baseName);
      const dest = store.realPath(info.path);
      if (staged === dest) continue; // Built in place (no isolation).
      if (lexists(dest)) removeTree(dest); // Invalid leftovers: we hold the lock and it is not valid.
      try {
        renameSync(staged, dest);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
        await copyAcross(store, staged, dest);
        // A rename leaves nothing behind; the copy must not either: in a shared build upper the
        // next build would find it there and be refused for writing outside its outputs.
        removeTree(staged);
      }
      moved.push(dest);
    }
    await store.registerValidPaths(infos.map((info) => ({ info })));
  } catch (e) {
    for (const m of moved) removeTree(m);
    throw e;
  }
}

/** The staging dir and the store are on different file systems (a layered store's merged dir). */
async function copyAcross(store: LocalFsStore, staged: string, dest: string): Promise<void> {
  const staging = StagingDir.create(store.realStoreDir);
  try {
    const tmp = join(staging.path, 'x');
    await restoreNar(dumpPath(staged), tmp, { canonicalise: true });
    renameSync(tmp, dest);
  } finally {
    staging.dispose();
  }
}
