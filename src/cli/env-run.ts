/**
 * What `strata env` and `strata shell` share: loading an environment with the global options and
 * showing what happened on stderr (stale reasons, collisions, a summary of a fresh build).
 */
import type { Command } from 'commander';

import type { EnvEvent, Environment } from '../env/environment.js';
import { globalOptions, storeUri, trustedKeys } from './global.js';
import { formatBytes } from './output.js';

/** Loads (from cache, or builds) the environment of `spec` for a CLI command. */
export async function loadEnvironmentForCli(
  cmd: Command,
  spec: string,
  useCache: boolean,
): Promise<Environment> {
  const g = globalOptions(cmd);
  const { loadEnvironment } = await import('../env/environment.js');
  const keys = trustedKeys(g);
  const env = await loadEnvironment(spec, {
    storeUri: storeUri(cmd),
    useCache,
    trustedPublicKeys: keys,
    requireSigs: g.requireSigs,
    openStore: async (uri) =>
      (await import('../store/open.js')).openStore(uri, {
        trustedPublicKeys: keys,
        requireSigs: g.requireSigs,
      }),
    onEvent: (e) => process.stderr.write(renderEvent(e, g.quiet === true)),
  });
  if (env.stats && !g.quiet) process.stderr.write(summary(env));
  return env;
}

function renderEvent(e: EnvEvent, quiet: boolean): string {
  switch (e.type) {
    case 'stale':
      return quiet ? '' : `environment cache is stale: ${e.reason}; rebuilding\n`;
    case 'collision':
      return `warning: collision at '${e.collision.file}': keeping '${e.collision.kept}' (listed first), not '${e.collision.dropped}'\n`;
    case 'warning':
      return `warning: ${e.message}\n`;
  }
}

function summary(env: Environment): string {
  const s = env.stats!;
  const copied = `${s.copiedUp !== undefined ? `, ${s.copiedUp} copied up` : ''}${s.substituted > 0 ? `, ${s.substituted} substituted` : ''}`;
  const profile = s.profileAdded
    ? `new profile (${formatBytes(s.profileBytes)} written)`
    : 'profile unchanged (nothing written)';
  return `environment: ${s.deps} deps, closure ${s.closurePaths} paths (${formatBytes(s.closureBytes)})${copied}; ${profile} ${env.profile} in ${(s.ms / 1000).toFixed(2)} s\n`;
}
