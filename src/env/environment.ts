/**
 * Development environments: a spec → its packages realised in a store → a profile → variables,
 * cached beside the spec. The one entry point the CLI (`strata env`, `strata shell`) and the demo
 * use is {@link loadEnvironment}; {@link buildEnvironment} is the uncached core for a store that
 * is already open.
 *
 * The fresh-cache path imports only this file's light dependencies (node:fs, the cache, the
 * store layout): the store, SQLite and the parsers are loaded only when the cache is stale.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, symlinkSync, unlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

import { StrataError } from '../core/error.js';
import { nix32Encode } from '../core/hash.js';
import type { StorePath } from '../core/store-path.js';
import type { Store } from '../store/store.js';
import { substituterSet } from '../store/substituter-set.js';
import {
  checkEnvCache,
  ENV_CACHE_VERSION,
  envCachePath,
  type EnvCacheFile,
  readEnvCache,
  restampEnvCache,
  statFiles,
  writeEnvCache,
} from './env-cache.js';
import type { Collision } from './profile.js';
import type { DrvRealiser } from './resolve.js';
import { type EnvSpec, findSpecFile, specHash } from './spec.js';
import { lowerGenerations, storeLayout } from './store-layout.js';
import type { EnvVariable } from './variables.js';

/** What happens while an environment is made, for the caller to show (the library prints nothing). */
export type EnvEvent =
  | { type: 'stale'; reason: string }
  | { type: 'collision'; collision: Collision }
  | { type: 'warning'; message: string };

/** Options of {@link loadEnvironment} and {@link buildEnvironment}. */
export interface EnvironmentOptions {
  /** The store: `layered:///dir`, `/abs/root`, `local`… */
  storeUri: string;
  /** Use and write `.cache/strata/env.json` (default true). */
  useCache?: boolean | undefined;
  /** Opens the store when the cache is stale (default `openStore(uri)`). */
  openStore?: ((uri: string) => Promise<Store>) | undefined;
  /** How `.drv` deps whose outputs no layer has get built (default: strata's `realise`). */
  realise?: DrvRealiser | undefined;
  /** Substituters asked for what no layer has, after the store's own (`strata.json`). */
  substituters?: string[] | undefined;
  /** Keys trusted for substituted paths, besides the store's own (`strata.json`). */
  trustedPublicKeys?: string[] | undefined;
  /** Refuse substituted paths neither signed by a trusted key nor content-addressed (default true). */
  requireSigs?: boolean | undefined;
  /** Name of the profile store path (default `strata-env`). */
  profileName?: string | undefined;
  onEvent?: ((event: EnvEvent) => void) | undefined;
}

/** Numbers about a freshly made environment. */
export interface EnvStats {
  /** Deps in the spec. */
  deps: number;
  /** Paths in the closure of the profile (the profile included) and their NAR bytes. */
  closurePaths: number;
  closureBytes: number;
  /** Rows a layered store copied up from its lowers for this environment (no bytes). */
  copiedUp?: number | undefined;
  /** Paths fetched from substituters (closures included). */
  substituted: number;
  /** True when the profile was new to the store; its NAR bytes (symlinks only). */
  profileAdded: boolean;
  profileBytes: number;
  collisions: Collision[];
  /** Wall time of the whole build, milliseconds. */
  ms: number;
}

/** A ready environment. */
export interface Environment {
  /** The spec file used (a directory argument is resolved to its spec file). */
  specFile: string;
  storeUri: string;
  /** The logical store dir, where the variables point. */
  storeDir: string;
  /** Where the store's files are on this machine (differs for chroot and layered stores). */
  realStoreDir: string;
  /** The profile, a full logical store path. */
  profile: string;
  /** Packages linked into the profile, highest priority first. */
  packages: string[];
  variables: EnvVariable[];
  /** `cache`: answered from a fresh cache, the store untouched; `built`: made now. */
  source: 'cache' | 'built';
  /** Why the cache was not used (absent when there was none or it was fresh). */
  staleReason?: string | undefined;
  /** Present when `source` is `built`. */
  stats?: EnvStats | undefined;
}

/**
 * The environment of a spec: from the cache when it is fresh (without opening the store), else
 * made in the store and cached.
 *
 * @example
 * ```ts
 * const env = await loadEnvironment('replit.nix', { storeUri: 'layered:///srv/me' });
 * process.stdout.write(formatExports(env.variables));
 * ```
 */
export async function loadEnvironment(
  spec: string,
  options: EnvironmentOptions,
): Promise<Environment> {
  const specFile = findSpecFile(spec);
  const bytes = readFileSync(specFile);
  // Hashed only when needed: a spec whose stat the cache recorded is not (see env-cache.ts).
  let hashed: string | undefined;
  const hash = () => (hashed ??= specHash(bytes));
  const useCache = options.useCache ?? true;
  let staleReason: string | undefined;
  if (useCache) {
    const answer = await answerFromCache(specFile, hash, options.storeUri);
    if (answer?.env) return answer.env;
    if (answer) {
      staleReason = answer.stale;
      options.onEvent?.({ type: 'stale', reason: answer.stale });
    }
  }
  const { parseSpec, specFormatOf } = await import('./spec.js');
  const text = bytes.toString('utf8');
  if (Buffer.compare(Buffer.from(text, 'utf8'), bytes) !== 0) {
    throw new StrataError('SPEC_INVALID', `Cannot read spec '${specFile}': it is not valid UTF-8`, {
      value: specFile,
    });
  }
  // Parse before opening the store: a bad spec fails fast and leaves the store alone.
  const parsed = await parseSpec(text, specFile, specFormatOf(specFile));
  const open =
    options.openStore ?? (async (uri: string) => (await import('../store/open.js')).openStore(uri));
  const store = await open(options.storeUri);
  let built: { env: Environment; cache: EnvCacheFile };
  try {
    built = await buildEnvironment(store, parsed, options);
  } finally {
    await store.close();
  }
  if (useCache) {
    const stats = statFiles([
      { file: resolve(specFile), hash: hash() },
      ...built.cache.indexes.flatMap((i) =>
        i.hash === null ? [] : [{ file: i.file, hash: i.hash }],
      ),
    ]);
    const failed = writeEnvCache(specFile, { ...built.cache, stats });
    if (failed)
      options.onEvent?.({
        type: 'warning',
        message: `cannot write the cache '${envCachePath(specFile)}': ${failed}`,
      });
    else await addProfileRoot(specFile, built.env, built.cache, options);
  }
  return { ...built.env, staleReason };
}

/**
 * The environment of a spec from its cache, if that is fresh, else `undefined`: no store, no
 * SQLite, no event. `strata env`'s fast path (src/cli/env-fresh.ts) answers with it before the
 * CLI itself is loaded; {@link loadEnvironment} gives the same answer.
 */
export async function freshEnvironment(spec: string, storeUri: string): Promise<Environment | undefined> {
  const specFile = findSpecFile(spec);
  const bytes = readFileSync(specFile);
  return (await answerFromCache(specFile, () => specHash(bytes), storeUri))?.env;
}

/** The cache's answer: a fresh environment, why it is stale, or `undefined` when there is none. */
async function answerFromCache(
  specFile: string,
  hashSpec: () => string,
  storeUri: string,
): Promise<{ env: Environment; stale?: undefined } | { env?: undefined; stale: string } | undefined> {
  const cache = readEnvCache(specFile);
  if (!cache) return undefined;
  const check = await checkEnvCache(cache, { specFile, specHash: hashSpec, storeUri });
  if (!check.fresh) return { stale: check.reason };
  restampEnvCache(specFile, cache, check.hashed);
  return { env: fromCache(specFile, cache) };
}

function fromCache(specFile: string, cache: EnvCacheFile): Environment {
  return {
    specFile,
    storeUri: cache.storeUri,
    storeDir: cache.storeDir,
    realStoreDir: cache.realStoreDir,
    profile: cache.profile,
    packages: cache.packages,
    variables: cache.variables,
    source: 'cache',
  };
}

/**
 * Makes the environment of a parsed spec in an open store (no cache read): resolves and realises
 * the deps, builds the profile, computes the variables. Also returns the cache record to write.
 *
 * @example const { env } = await buildEnvironment(store, await readSpec('replit.nix'), { storeUri: store.uri });
 */
export async function buildEnvironment(
  store: Store,
  spec: EnvSpec,
  options: EnvironmentOptions,
): Promise<{ env: Environment; cache: EnvCacheFile }> {
  const started = performance.now();
  const { isLocalFsStore } = await import('../store/store.js');
  if (!isLocalFsStore(store)) {
    throw new StrataError(
      'STORE_UNSUPPORTED',
      `Cannot make an environment in '${store.uri}': it needs a local or layered store (its files on this machine)`,
      { value: store.uri },
    );
  }
  // Stamps first: a lower that changes while we work makes the next check stale, not wrong.
  const layout = await storeLayout(store.uri);
  const lowers = lowerGenerations(layout);
  const { PackageIndex } = await import('./package-index.js');
  const index = PackageIndex.load(layout.indexes);
  const { resolveDeps } = await import('./resolve.js');
  const upperDb = upperDatabase(store);
  const rowsBefore = upperDb?.countValid();
  let copiedUp: number | undefined;
  // Opened on first use: an environment whose deps all are in some layer never opens one.
  const subs = substituterSet(
    store,
    [...layout.substituters, ...(options.substituters ?? [])],
    { trustedPublicKeys: [...layout.trustedPublicKeys, ...(options.trustedPublicKeys ?? [])], requireSigs: options.requireSigs },
    { openStore: options.openStore, onWarning: (message) => options.onEvent?.({ type: 'warning', message }) },
  );
  let resolved;
  try {
    resolved = await resolveDeps(store, spec, {
      index,
      realise: options.realise,
      substitute: subs.substitute,
      afterCopyUp: () => {
        if (upperDb && rowsBefore !== undefined) copiedUp = upperDb.countValid() - rowsBefore;
      },
    });
  } finally {
    await subs.close();
  }

  const { buildProfile, treeHasDir } = await import('./profile.js');
  const packages = dedupe(resolved.flatMap((r) => r.paths));
  const profile = await buildProfile(store, packages, { name: options.profileName });
  for (const c of profile.tree.collisions) options.onEvent?.({ type: 'collision', collision: c });
  for (const s of profile.tree.skipped)
    options.onEvent?.({
      type: 'warning',
      message: `'${s}' is not a directory: nothing of it is linked into the profile`,
    });
  const dir = store.storeDir;
  const profilePath = dir.print(profile.path);
  const loc = { storeDir: dir.path, realStoreDir: store.realStoreDir };
  const { envVariables } = await import('./variables.js');
  const variables = envVariables(profilePath, (rel) => treeHasDir(loc, profile.tree.root, rel));

  const { closurePaths, closureBytes } = await closureOf(store, profile.path);
  const env: Environment = {
    specFile: spec.file,
    storeUri: store.uri,
    storeDir: dir.path,
    realStoreDir: store.realStoreDir,
    profile: profilePath,
    packages: profile.tree.packages,
    variables,
    source: 'built',
    stats: {
      deps: spec.deps.length,
      closurePaths,
      closureBytes,
      copiedUp,
      substituted: subs.count(),
      profileAdded: profile.added,
      profileBytes: profile.info.narSize,
      collisions: profile.tree.collisions,
      ms: Math.round(performance.now() - started),
    },
  };
  const cache: EnvCacheFile = {
    version: ENV_CACHE_VERSION,
    spec: resolve(spec.file),
    specHash: spec.hash,
    storeUri: store.uri,
    storeDir: dir.path,
    realStoreDir: store.realStoreDir,
    lowers,
    indexes: index.stamps,
    packages: profile.tree.packages,
    profile: profilePath,
    variables,
    createdAt: new Date().toISOString(),
  };
  return { env, cache };
}

function dedupe<T extends { baseName: string }>(paths: T[]): T[] {
  const seen = new Set<string>();
  return paths.filter((p) => !seen.has(p.baseName) && (seen.add(p.baseName), true));
}

/** The upper database of a layered store, to count copied-up rows (a plain store copies nothing up). */
function upperDatabase(store: Store): { countValid(): number } | undefined {
  const db = (store as Store & { upper?: { db?: { countValid?: () => number } } }).upper?.db;
  return typeof db?.countValid === 'function' ? (db as { countValid(): number }) : undefined;
}

/**
 * Size of the profile's closure: counted by one SQL query where the store has a DB (a layered
 * store's upper has the whole closure once it is copied up: its rows only refer to its own),
 * else summed over a walk.
 */
async function closureOf(
  store: Store,
  path: StorePath,
): Promise<{ closurePaths: number; closureBytes: number }> {
  const s = store as Store & { upper?: unknown; db?: unknown };
  const db = ((s.upper ?? s) as { db?: { queryClosureSize?: unknown } }).db;
  if (typeof db?.queryClosureSize === 'function') {
    const size = (
      db as { queryClosureSize(p: StorePath[]): { paths: number; bytes: number } }
    ).queryClosureSize([path]);
    return { closurePaths: size.paths, closureBytes: size.bytes };
  }
  const { computeClosure } = await import('../store/closure.js');
  const infos = [...(await computeClosure(store, [path])).values()];
  return { closurePaths: infos.length, closureBytes: infos.reduce((n, i) => n + i.narSize, 0) };
}

/**
 * Keeps the profile from the GC while the cache names it: `.cache/strata/profile` links to it,
 * and an indirect root `<state>/gcroots/auto/<nix32(sha1(link))>` links to that link, as
 * `nix-store --add-root --indirect` does.
 */
async function addProfileRoot(
  specFile: string,
  env: Environment,
  cache: EnvCacheFile,
  options: EnvironmentOptions,
): Promise<void> {
  try {
    const link = join(dirname(envCachePath(specFile)), 'profile');
    replaceSymlink(env.profile, link);
    const stateDir = await stateDirOf(cache.storeUri);
    if (stateDir === undefined) return;
    const autoDir = join(stateDir, 'gcroots', 'auto');
    mkdirSync(autoDir, { recursive: true });
    replaceSymlink(link, join(autoDir, nix32Encode(createHash('sha1').update(link).digest())));
  } catch (e) {
    options.onEvent?.({
      type: 'warning',
      message: `cannot register the profile as a GC root: ${(e as Error).message}`,
    });
  }
}

function replaceSymlink(target: string, link: string): void {
  const tmp = `${link}.tmp-${process.pid}`;
  try {
    unlinkSync(tmp);
  } catch {
    // No leftover.
  }
  symlinkSync(target, tmp);
  renameSync(tmp, link);
}

/** The state dir (gcroots) of a local or layered store URI. */
async function stateDirOf(uri: string): Promise<string | undefined> {
  const layout = await storeLayout(uri);
  const own = layout.indexes.find((i) => i.layer === 'upper' || i.layer === 'store');
  return own && layout.realStoreDir ? dirname(own.file) : undefined;
}
