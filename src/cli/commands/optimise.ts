/**
 * `strata optimise` (`nix-store --optimise`): hard-link identical files through `.links`.
 */
import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('optimise')
    .description('deduplicate identical files in the store with hard links (nix-store --optimise)')
    .action(async (_opts: object, cmd: Command) => {
      const { withStore } = await import('../with-store.js');
      const { globalOptions } = await import('../global.js');
      const { print, printJson } = await import('../output.js');
      const g = globalOptions(cmd);
      await withStore(cmd, async (store) => {
        const { LocalStore } = await import('../../store/local/local-store.js');
        let result;
        if (store instanceof LocalStore) {
          const { optimiseStore } = await import('../../store/local/optimise.js');
          result = await optimiseStore(store, {
            report: (level, message) => {
              if (level === 'warn' || !g.quiet) process.stderr.write(`${level === 'warn' ? 'warning: ' : ''}${message}\n`);
            },
          });
        } else {
          result = await store.optimise();
        }
        if (g.json) {
          printJson(result);
        } else {
          const { showMiB } = await import('../../store/local/gc.js');
          print(`${showMiB(result.bytesSaved)} freed by hard-linking ${result.filesLinked} files`);
        }
      });
    });
}
