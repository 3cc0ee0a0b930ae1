/**
 * The environment cache, `.cache/strata/env.json` beside the spec: the answer of the last
 * `strata env` and everything that would make it wrong. A fresh cache is checked and used
 * without opening the store's database (hashes of two or three small files, one `readFile` of
 * each lower's generation, one `lstat` per package), so `strata env` costs little more than
 * Node's start-up; a stale one says why.
 *
 * Stale when: the store URI differs; the spec's bytes changed; the set of local lowers or any
 * lower's generation changed (a new big disk); any package index file changed, appeared or
 * went; the profile or a package is no longer in the store's directory (collected, or the
 * layered store is not mounted).
 */
import { existsSync, lstatSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

import { readIndexFile, type IndexStamp } from './package-index.js';
import { lowerGenerations, storeLayout } from './store-layout.js';
import type { EnvVariable } from './variables.js';

/** Format version of env.json; a different one is stale. */
export const ENV_CACHE_VERSION = 1;

/** The contents of `.cache/strata/env.json`. */
export interface EnvCacheFile {
  version: typeof ENV_CACHE_VERSION;
  /** Absolute path of the spec file. */
  spec: string;
  /** sha256 (hex) of the spec's bytes. */
  specHash: string;
  storeUri: string;
  /** The logical store dir (`/nix/store`). */
  storeDir: string;
  /** Where the store's files are on this machine. */
  realStoreDir: string;
  /** Each local lower's generation when the environment was made. */
  lowers: Array<{ name: string; root: string; generation: string }>;
  /** Every package index file consulted. */
  indexes: IndexStamp[];
  /** The packages linked into the profile, full logical paths, highest priority first. */
  packages: string[];
  /** The profile's full logical path. */
  profile: string;
  variables: EnvVariable[];
  /** ISO time of creation. */
  createdAt: string;
}

/** Where the cache of `specFile` lives. */
export function envCachePath(specFile: string): string {
  return join(dirname(resolve(specFile)), '.cache', 'strata', 'env.json');
}

/** Reads the cache, or undefined when it is missing or not a cache this version understands. */
export function readEnvCache(specFile: string): EnvCacheFile | undefined {
  try {
    const raw = JSON.parse(readFileSync(envCachePath(specFile), 'utf8')) as Partial<EnvCacheFile>;
    if (
      raw.version !== ENV_CACHE_VERSION ||
      typeof raw.profile !== 'string' ||
      !Array.isArray(raw.variables)
    )
      return undefined;
    return raw as EnvCacheFile;
  } catch {
    return undefined;
  }
}

/**
 * Writes the cache atomically (temp file, then rename). A spec in a read-only directory simply
 * has no cache: returns the error message instead of throwing.
 */
export function writeEnvCache(specFile: string, cache: EnvCacheFile): string | undefined {
  const file = envCachePath(specFile);
  try {
    mkdirSync(dirname(file), { recursive: true });
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, `${JSON.stringify(cache, null, 2)}\n`);
    renameSync(tmp, file);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Fresh, or stale with the reason (one line, for stderr). */
export type CacheCheck = { fresh: true } | { fresh: false; reason: string };

/**
 * Checks a cache against the spec's current bytes hash and the store, without opening it.
 *
 * @example
 * ```ts
 * const check = await checkEnvCache(cache, { specFile, specHash: specHash(bytes), storeUri });
 * if (!check.fresh) console.error(`environment is stale: ${check.reason}`);
 * ```
 */
export async function checkEnvCache(
  cache: EnvCacheFile,
  current: { specFile: string; specHash: string; storeUri: string },
): Promise<CacheCheck> {
  const stale = (reason: string): CacheCheck => ({ fresh: false, reason });
  if (cache.storeUri !== current.storeUri)
    return stale(`the store changed ('${cache.storeUri}' → '${current.storeUri}')`);
  if (cache.spec !== resolve(current.specFile))
    return stale(`the spec file changed ('${cache.spec}' → '${resolve(current.specFile)}')`);
  if (cache.specHash !== current.specHash) return stale(`${basename(current.specFile)} changed`);
  let layout;
  try {
    layout = await storeLayout(current.storeUri);
  } catch (e) {
    return stale((e as Error).message);
  }
  const gens = lowerGenerations(layout);
  const was = new Map(cache.lowers.map((l) => [l.name, l]));
  if (gens.length !== cache.lowers.length || gens.some((g) => was.get(g.name)?.root !== g.root))
    return stale('the store’s lowers changed');
  for (const g of gens) {
    const before = was.get(g.name)!.generation;
    if (before !== g.generation)
      return stale(`lower ${g.name} changed generation (${before} → ${g.generation})`);
  }
  const files = layout.indexes.map((i) => i.file);
  if (files.length !== cache.indexes.length || files.some((f, i) => cache.indexes[i]!.file !== f))
    return stale('the package indexes changed');
  for (const stamp of cache.indexes) {
    let now: IndexStamp;
    try {
      now = readIndexFile(stamp.file).stamp;
    } catch (e) {
      return stale((e as Error).message);
    }
    if (now.hash !== stamp.hash)
      return stale(
        `package index '${stamp.file}' ${stamp.hash === null ? 'appeared' : now.hash === null ? 'was removed' : 'changed'}`,
      );
  }
  const prefix = `${cache.storeDir}/`;
  for (const p of [cache.profile, ...cache.packages]) {
    try {
      lstatSync(join(cache.realStoreDir, p.slice(prefix.length)));
    } catch {
      if (!isMountPoint(cache.realStoreDir) && layout.lowers.length > 0)
        return stale(`'${cache.realStoreDir}' is not mounted`);
      return stale(`'${p}' is no longer in the store`);
    }
  }
  return { fresh: true };
}

/** True when `dir` is a mount point (only asked when a path is missing, to say why). */
function isMountPoint(dir: string): boolean {
  if (!existsSync('/proc/self/mounts')) return true;
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some(
      (l) =>
        l
          .split(' ')[1]
          ?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))) === dir,
    );
}
