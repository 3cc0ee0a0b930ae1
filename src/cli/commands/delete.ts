/**
 * `strata delete PATH…`: delete exactly these paths (`nix-store --delete`), refusing (and
 * deleting nothing) when any is still alive.
 */
import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('delete')
    .description('delete store paths nothing alive refers to (nix-store --delete)')
    .argument('<paths...>', 'store paths')
    .action(async (args: string[], _opts: object, cmd: Command) => {
      const { withStore, parsePathArg } = await import('../with-store.js');
      const { globalOptions } = await import('../global.js');
      const { print, printJson } = await import('../output.js');
      const g = globalOptions(cmd);
      await withStore(cmd, async (store) => {
        const paths = args.map((a) => parsePathArg(store, a));
        const { LocalStore } = await import('../../store/local/local-store.js');
        let result;
        if (store instanceof LocalStore) {
          const { deletePaths } = await import('../../store/local/gc.js');
          result = await deletePaths(store, paths, {
            report: (level, message) => {
              if (level === 'warn' || !g.quiet) process.stderr.write(`${level === 'warn' ? 'warning: ' : ''}${message}\n`);
            },
          });
        } else {
          result = await store.deletePaths(paths);
        }
        const deleted = result.deleted.map((p) => store.storeDir.print(p));
        if (g.json) {
          printJson({ deleted, bytesFreed: result.bytesFreed });
        } else {
          const { showMiB } = await import('../../store/local/gc.js');
          print(`${deleted.length} store paths deleted, ${showMiB(result.bytesFreed)} freed`);
        }
      });
    });
}
