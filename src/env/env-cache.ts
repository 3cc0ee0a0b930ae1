/**
 * The environment cache, `.cache/strata/env.json` beside the spec: the answer of the last
 * `strata env` and everything that would make it wrong. A fresh cache is checked and used
 * without opening the store's database (hashes of two or three small files, one `readFile` of
 * each lower's generation, one `lstat` per package), so `strata env` costs little more than
 * Node's start-up; a stale one says why.
 *
 * The spec and the package indexes are compared by sha256, except that a file whose `stat` is
 * exactly as recorded (see {@link FileStat}) is taken as unchanged without reading it: hashing
 * needs node:crypto, whose loading was the largest cost left on the fresh path (a tenth of its
 * CPU profile, bench/env.ts).
 *
 * Stale when: the store URI differs; the spec's bytes changed; the set of local lowers or any
 * lower's generation changed (a new big disk); any package index file changed, appeared or
 * went; the profile or a package is no longer in the store's directory (collected, or the
 * layered store is not mounted).
 */
import { createHash } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
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
  /** `stat` of the spec and of the index files whose hashes are recorded (absent: hash them). */
  stats?: FileStat[];
}

/**
 * What `stat` said of a file whose bytes hashed to the recorded hash. An equal stat later means
 * equal bytes because the kernel sets ctime to the current time on every change to a file
 * (write, truncate, rename over it, utimes, chmod) and nothing can set it back; and a replaced
 * file has another inode. The one gap is a change within the same clock tick as the recorded
 * ctime, so a file is only stamped when its ctime is at least {@link STAMP_MARGIN_MS} old.
 */
export interface FileStat {
  file: string;
  dev: string;
  ino: string;
  size: string;
  mtimeNs: string;
  ctimeNs: string;
}

/** 1 s: far above a file-system clock tick (a jiffy, 1-10 ms). */
const STAMP_MARGIN_MS = 1000;

function statOf(file: string): FileStat | undefined {
  try {
    const s = statSync(file, { bigint: true });
    const [dev, ino, size, mtimeNs, ctimeNs] = [s.dev, s.ino, s.size, s.mtimeNs, s.ctimeNs].map(
      String,
    ) as [string, string, string, string, string];
    return { file, dev, ino, size, mtimeNs, ctimeNs };
  } catch {
    return undefined;
  }
}

/** True when `file`'s stat is exactly as `stats` recorded it. */
function unchanged(stats: FileStat[] | undefined, file: string): boolean {
  const was = stats?.find((s) => s.file === file);
  const now = was ? statOf(file) : undefined;
  if (!was || !now) return false;
  return (Object.keys(now) as Array<keyof FileStat>).every((k) => was[k] === now[k]);
}

/**
 * Stats of files whose bytes hash (sha256, hex) to `hash` now, for {@link EnvCacheFile.stats}.
 * Each is taken before the bytes are read again and checked against the hash, so a stat never
 * vouches for bytes other than the hashed ones; a file changed less than a second ago is left
 * out (hashed at every check).
 */
export function statFiles(files: Array<{ file: string; hash: string }>): FileStat[] {
  const out: FileStat[] = [];
  for (const { file, hash } of files) {
    const st = statOf(file);
    if (!st || BigInt(st.ctimeNs) > BigInt(Date.now() - STAMP_MARGIN_MS) * 1_000_000n) continue;
    try {
      if (createHash('sha256').update(readFileSync(file)).digest('hex') === hash) out.push(st);
    } catch {
      // unreadable now: no stat, so the next check reads it
    }
  }
  return out;
}

/**
 * After a check found the cache fresh: records the stat of each file it had to hash (`hashed`,
 * from {@link CacheCheck}: the spec or a package index whose stat was missing or out of date), so
 * that later checks skip hashing it and loading node:crypto. A stat is missing when the file
 * changed less than a second before the cache was written (the usual case: edit the spec, run
 * `strata env`). Best effort: a cache that cannot be written stays as it is. A concurrent rebuild
 * may be overwritten by this older record, which the next check then finds stale: a rebuild
 * more, never a wrong answer.
 */
export function restampEnvCache(specFile: string, cache: EnvCacheFile, hashed: string[]): void {
  if (hashed.length === 0) return;
  const hashOf = new Map<string, string>([[cache.spec, cache.specHash]]);
  for (const i of cache.indexes) if (i.hash !== null) hashOf.set(i.file, i.hash);
  const added = statFiles(hashed.map((file) => ({ file, hash: hashOf.get(file)! })));
  if (added.length === 0) return;
  const kept = (cache.stats ?? []).filter((s) => !added.some((a) => a.file === s.file));
  writeEnvCache(specFile, { ...cache, stats: [...kept, ...added] });
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

/**
 * Fresh, with the files it had to hash because their stat did not vouch for them (see
 * {@link restampEnvCache}); or stale, with the reason (one line, for stderr).
 */
export type CacheCheck = { fresh: true; hashed: string[] } | { fresh: false; reason: string };

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
  current: { specFile: string; specHash: string | (() => string); storeUri: string },
): Promise<CacheCheck> {
  const stale = (reason: string): CacheCheck => ({ fresh: false, reason });
  if (cache.storeUri !== current.storeUri)
    return stale(`the store changed ('${cache.storeUri}' → '${current.storeUri}')`);
  if (cache.spec !== resolve(current.specFile))
    return stale(`the spec file changed ('${cache.spec}' → '${resolve(current.specFile)}')`);
  const hashNow = () =>
    typeof current.specHash === 'string' ? current.specHash : current.specHash();
  const hashed: string[] = [];
  if (!unchanged(cache.stats, cache.spec)) {
    if (cache.specHash !== hashNow()) return stale(`${basename(current.specFile)} changed`);
    hashed.push(cache.spec);
  }
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
    if (stamp.hash !== null && unchanged(cache.stats, stamp.file)) continue;
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
    if (stamp.hash !== null) hashed.push(stamp.file);
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
  return { fresh: true, hashed };
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
