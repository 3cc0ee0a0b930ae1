import type { Command } from 'commander';

/**
 * `strata env SPEC [--json]`: the environment's variables as `export` lines (for
 * `eval "$(strata env replit.nix)"`) or JSON. Start-up matters here most of all: a fresh cache
 * is answered by src/env/environment.ts without loading the store, so nothing heavy may be
 * imported at the top of this file.
 */
export function register(program: Command): void {
  program
    .command('env')
    .description(
      "realise a spec's packages, build its profile and print its variables (cached in .cache/strata/env.json)",
    )
    .argument('<spec>', 'replit.nix, *.json or *.toml spec, or a directory holding one')
    .option('--no-cache', 'neither use nor write .cache/strata/env.json')
    .action(async (spec: string, opts: { cache: boolean }, cmd: Command) => {
      const { loadEnvironmentForCli } = await import('../env-run.js');
      const { globalOptions } = await import('../global.js');
      const env = await loadEnvironmentForCli(cmd, spec, opts.cache);
      if (globalOptions(cmd).json) {
        const { environmentJson } = await import('../env-json.js');
        const { printJson } = await import('../output.js');
        printJson(environmentJson(env));
        return;
      }
      const { formatExports } = await import('../../env/variables.js');
      process.stdout.write(formatExports(env.variables));
    });
}
