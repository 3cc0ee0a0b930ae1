import type { Command } from 'commander';

/** `strata shell SPEC [[--] CMD…]`: an interactive shell, or a command, in a spec's environment. */
export function register(program: Command): void {
  program
    .command('shell')
    .description(
      "run $SHELL, or the command after the spec, in a spec's environment (store mounted at its logical dir)",
    )
    .argument('<spec>', 'replit.nix, *.json or *.toml spec, or a directory holding one')
    .argument('[command...]', 'command and arguments, passed as they are (a -- before them is optional)')
    .option('--no-cache', 'neither use nor write .cache/strata/env.json')
    .action(async (spec: string, command: string[], opts: { cache: boolean }, cmd: Command) => {
      const { loadEnvironmentForCli } = await import('../env-run.js');
      const env = await loadEnvironmentForCli(cmd, spec, opts.cache);
      const { runShell } = await import('../../env/shell.js');
      process.exitCode = await runShell(env, { command });
    });
}
