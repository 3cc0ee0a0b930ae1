/**
 * Development environments (spec → packages → profile → variables, cached beside the spec).
 *
 * @example
 * ```ts
 * import { loadEnvironment, formatExports, runShell } from './env/index.js';
 * const env = await loadEnvironment('replit.nix', { storeUri: 'layered:///srv/me' });
 * process.stdout.write(formatExports(env.variables));
 * await runShell(env, { command: ['hello'] });
 * ```
 */
export {
  checkEnvCache,
  ENV_CACHE_VERSION,
  envCachePath,
  type CacheCheck,
  type EnvCacheFile,
  readEnvCache,
  writeEnvCache,
} from './env-cache.js';
export {
  buildEnvironment,
  type Environment,
  type EnvironmentOptions,
  type EnvEvent,
  type EnvStats,
  loadEnvironment,
} from './environment.js';
export { type IndexHit, type IndexStamp, PackageIndex, parseIndex } from './package-index.js';
export {
  buildProfile,
  type Collision,
  mergePackages,
  type MergedTree,
  type Profile,
  profileNar,
  resolveReal,
  treeHasDir,
} from './profile.js';
export { type DrvRealiser, type ResolvedDep, resolveDeps } from './resolve.js';
export { runShell, shellInvocation, type ShellInvocation, type ShellOptions } from './shell.js';
export {
  type EnvSpec,
  findSpecFile,
  parseSpec,
  readSpec,
  SPEC_FILE_NAMES,
  type SpecDep,
  type SpecFormat,
  specFormatOf,
  specHash,
} from './spec.js';
export {
  type IndexLocation,
  indexFileOfRoot,
  type LayerLocation,
  lowerGenerations,
  PACKAGE_INDEX_FILE,
  storeLayout,
  type StoreLayout,
} from './store-layout.js';
export {
  applyVariables,
  type EnvVariable,
  envVariables,
  formatExports,
  SEARCH_PATHS,
  shellQuote,
} from './variables.js';
export { type SpecPosition } from './_cursor.js';
