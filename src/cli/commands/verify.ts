/**
 * `strata verify [--check-contents] [--repair]` (`nix-store --verify`): problems are listed on
 * stderr and the exit code is 1 when there are any.
 */
import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('verify')
    .description('check that every valid path exists and, optionally, is unmodified (nix-store --verify)')
    .option('--check-contents', 're-hash every path and compare with its recorded NAR hash')
    .option('--repair', 'repair broken paths where a substituter can provide them')
    .option('--substituter <uri>', 'a store to repair from (repeatable; also $STRATA_SUBSTITUTERS)', (v: string, acc: string[] = []) => [...acc, v])
    .action(async (opts: { checkContents?: boolean; repair?: boolean; substituter?: string[] }, cmd: Command) => {
      const { withStore } = await import('../with-store.js');
      const { globalOptions, substitutersOf } = await import('../global.js');
      const { printJson } = await import('../output.js');
      const g = globalOptions(cmd);
      const options = { checkContents: opts.checkContents === true, repair: opts.repair === true };
      await withStore(cmd, async (store) => {
        const { LocalStore } = await import('../../store/local/local-store.js');
        const dir = store.storeDir;
        let result;
        let errors: string[] = [];
        if (store instanceof LocalStore) {
          const { verifyStore } = await import('../../store/local/verify.js');
          const substituters = substitutersOf(opts.substituter);
          const { repairFromSubstituters } = await import('../../store/repair.js');
          const r = await verifyStore(store, {
            ...options,
            repairFrom: (p) => repairFromSubstituters(store, substituters, p),
            report: (level, message) => {
              if (level === 'error') process.stderr.write(`error: ${message}\n`);
              else if (level === 'warn') process.stderr.write(`warning: ${message}\n`);
              else if (!g.quiet) process.stderr.write(`${message}\n`);
            },
          });
          result = r;
          errors = r.errors;
        } else {
          result = await store.verify(options);
          if (!g.json) {
            for (const p of result.modified) process.stderr.write(`error: path '${dir.print(p)}' was modified!\n`);
            for (const p of result.missing) process.stderr.write(`error: path '${dir.print(p)}' disappeared\n`);
          }
        }
        if (g.json) {
          const names = (ps: { baseName: string }[]) => ps.map((p) => `${dir.path}/${p.baseName}`);
          printJson({
            ok: result.ok,
            modified: names(result.modified),
            missing: names(result.missing),
            repaired: names(result.repaired),
            ...('invalidated' in result ? { invalidated: names(result.invalidated as { baseName: string }[]) } : {}),
            errors,
          });
        }
        if (!result.ok) process.exitCode = 1;
      });
    });
}
