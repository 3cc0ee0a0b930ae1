import type { Command } from 'commander';

import { UsageError } from '../output.js';

export function register(program: Command): void {
  program
    .command('realise')
    .description(
      'build derivations (or find their outputs valid) and print the output paths (nix-store -r)',
    )
    .argument('<drvs...>', '.drv store paths')
    .option('-j, --max-jobs <n>', 'builds at once', '1')
    .option('-k, --keep-going', 'keep building what does not depend on a failed build')
    .option('--cores <n>', 'NIX_BUILD_CORES for builders (default: the CPUs of this machine)')
    .action(
      async (
        args: string[],
        opts: { maxJobs: string; keepGoing?: boolean; cores?: string },
        cmd: Command,
      ) => {
        const jobs = Number(opts.maxJobs);
        if (!Number.isInteger(jobs) || jobs < 1)
          throw new UsageError(`Invalid number of jobs '${opts.maxJobs}'`);
        const cores = opts.cores === undefined ? undefined : Number(opts.cores);
        if (cores !== undefined && (!Number.isInteger(cores) || cores < 0))
          throw new UsageError(`Invalid number of cores '${opts.cores}'`);
        const { withStore, parsePathArg } = await import('../with-store.js');
        const { globalOptions } = await import('../global.js');
        const { print } = await import('../output.js');
        const { isLocalFsStore } = await import('../../store/store.js');
        const { StrataError } = await import('../../core/error.js');
        const { realise, BuildFailure } = await import('../../build/index.js');
        const g = globalOptions(cmd);
        await withStore(cmd, async (store) => {
          if (!isLocalFsStore(store)) {
            throw new StrataError(
              'UNSUPPORTED',
              `Cannot build in '${store.uri}': builds need a store whose files are on this machine`,
              { value: store.uri },
            );
          }
          const drvPaths = args.map((a) => parsePathArg(store, a));
          // Ctrl-C or a kill: stop the builders and let the run clean up (build dirs, the
          // namespace, partial outputs) rather than die with them left behind. A second signal
          // finds no handler and ends the process at once.
          const interrupt = new AbortController();
          let caught: NodeJS.Signals | undefined;
          const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
          const onSignal = (sig: NodeJS.Signals): void => {
            caught = sig;
            for (const s of signals) process.off(s, onSignal);
            interrupt.abort();
          };
          for (const s of signals) process.on(s, onSignal);
          let results;
          try {
            results = await realise(store, drvPaths, {
              signal: interrupt.signal,
              jobs,
              keepGoing: opts.keepGoing === true,
              cores,
              onLog: g.verbose ? (_drv, chunk) => process.stderr.write(chunk) : undefined,
              onEvent: (e) => {
                if (e.type === 'warning') process.stderr.write(`warning: ${e.message}\n`);
                else if (e.type === 'building' && !g.quiet)
                  process.stderr.write(`building '${store.storeDir.print(e.drvPath)}'...\n`);
                else if (e.type === 'failed' && e.error instanceof BuildFailure) {
                  // Nix shows the end of the log right where the failure happens; the error line follows at exit.
                  process.stderr.write(
                    `last ${e.error.logTail.length} log lines of '${store.storeDir.print(e.drvPath)}':\n${e.error.logTail.map((l) => `> ${l}\n`).join('')}`,
                  );
                }
              },
            });
          } finally {
            for (const s of signals) process.off(s, onSignal);
          }
          if (caught !== undefined) {
            throw new StrataError('INTERRUPTED', `Cannot realise: interrupted by ${caught}`, {
              value: caught,
            });
          }
          for (const r of results)
            for (const p of r.outputs?.values() ?? []) print(store.storeDir.print(p));
          const errors = results.filter((r) => r.error).map((r) => r.error!);
          if (errors.length === 0) return;
          // A build cancelled because another failed is not the news: report the failure itself.
          throw (
            errors.find((e) => !(e instanceof StrataError && e.code === 'BUILD_CANCELLED')) ??
            errors[0]!
          );
        });
      },
    );
}
