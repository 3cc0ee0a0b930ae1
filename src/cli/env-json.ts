/** The `--json` form of an environment, shared by `strata env` and its fast path (env-fresh.ts). */
import type { Environment } from '../env/environment.js';

export function environmentJson(env: Environment): Record<string, unknown> {
  return {
    spec: env.specFile,
    store: env.storeUri,
    storeDir: env.storeDir,
    realStoreDir: env.realStoreDir,
    profile: env.profile,
    packages: env.packages,
    variables: env.variables,
    source: env.source,
    ...(env.staleReason !== undefined ? { staleReason: env.staleReason } : {}),
    ...(env.stats !== undefined ? { stats: env.stats } : {}),
  };
}
