import type { Command } from 'commander';

import type { StorePath } from '../../core/store-path.js';
import type { SubstituterSet } from '../../store/substituter-set.js';
import type { LocalFsStore } from '../../store/store.js';
import type { GlobalOptions } from '../global.js';
import { UsageError } from '../output.js';

interface RealiseOptions {
  maxJobs: string;
  keepGoing?: boolean;
  cores?: string;
  substituter?: string[];
}

export function register(program: Command): void {
  program
    .command('realise')
    .description(
      'build derivations (or find their outputs valid) and print the output paths (nix-store -r)',
    )
    .argument('<paths...>', '.drv store paths to build; any other store path is made valid by substitution')
    .option('-j, --max-jobs <n>', 'builds at once', '1')
    .option('-k, --keep-going', 'keep building what does not depend on a failed build')
    .option('--cores <n>', 'NIX_BUILD_CORES for builders (default: the CPUs of this machine)')
    .option(
      '--substituter <uri>',
      "a binary cache to ask before building (repeatable; also $STRATA_SUBSTITUTERS and a layered store's strata.json)",
      (v: string, acc: string[] = []) => [...acc, v],
    )
    .action(async (args: string[], opts: RealiseOptions, cmd: Command) => {
      const jobs = Number(opts.maxJobs);
      if (!Number.isInteger(jobs) || jobs < 1)
        throw new UsageError(`Invalid number of jobs '${opts.maxJobs}'`);
      const cores = opts.cores === undefined ? undefined : Number(opts.cores);
      if (cores !== undefined && (!Number.isInteger(cores) || cores < 0))
        throw new UsageError(`Invalid number of cores '${opts.cores}'`);
      const { withStore, parsePathArg } = await import('../with-store.js');
      const { globalOptions, substitutersOf, trustedKeys } = await import('../global.js');
      const { isLocalFsStore } = await import('../../store/store.js');
      const { StrataError } = await import('../../core/error.js');
      const { storeLayout } = await import('../../env/store-layout.js');
      const { substituterSet } = await import('../../store/substituter-set.js');
      const g = globalOptions(cmd);
      await withStore(cmd, async (store) => {
        if (!isLocalFsStore(store)) {
          throw new StrataError(
            'UNSUPPORTED',
            `Cannot build in '${store.uri}': builds need a store whose files are on this machine`,
            { value: store.uri },
          );
        }
        const paths = args.map((a) => parsePathArg(store, a));
        // Substituters: the command line's, the environment's and the store's own (strata.json).
        const layout = await storeLayout(store.uri);
        const subs = substituterSet(
          store,
          [...substitutersOf(opts.substituter), ...layout.substituters],
          { trustedPublicKeys: [...trustedKeys(g), ...layout.trustedPublicKeys], requireSigs: g.requireSigs },
          { onWarning: (m) => process.stderr.write(`warning: ${m}\n`) },
        );
        try {
          await realiseAndPrint(store, paths, { jobs, cores, keepGoing: opts.keepGoing === true }, g, subs);
        } finally {
          await subs.close();
        }
      });
    });
}

/**
 * As `nix-store -r`: each derivation built (or its outputs found valid or substituted), any other
 * path made valid by substitution; then the outputs and paths printed in the order given.
 */
async function realiseAndPrint(
  store: LocalFsStore,
  paths: StorePath[],
  run: { jobs: number; cores: number | undefined; keepGoing: boolean },
  g: GlobalOptions,
  subs: SubstituterSet,
): Promise<void> {
  const { print } = await import('../output.js');
  const { StrataError } = await import('../../core/error.js');
  const { realise, BuildFailure } = await import('../../build/index.js');
  // Ctrl-C or a kill: stop the builders and let the run clean up (build dirs, the namespace,
  // partial outputs) rather than die with them left behind. A second signal finds no handler and
  // ends the process at once.
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
    results = await realise(store, paths.filter((p) => p.isDerivation()), {
      ...run,
      signal: interrupt.signal,
      substitute: subs.substitute,
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
    throw new StrataError('INTERRUPTED', `Cannot realise: interrupted by ${caught}`, { value: caught });
  }

  // Any other path: valid already (in some layer), or substituted with its closure.
  const others = paths.filter((p) => !p.isDerivation());
  const missing: StorePath[] = [];
  for (const p of others) if (!(await store.isValidPath(p))) missing.push(p);
  if (missing.length > 0 && subs.substitute) await subs.substitute(missing);
  const unavailable = new Set<string>();
  for (const p of missing) if (!(await store.isValidPath(p))) unavailable.add(p.baseName);

  const built = new Map(results.map((r) => [r.drvPath.baseName, r]));
  for (const p of paths) {
    if (!p.isDerivation()) {
      if (!unavailable.has(p.baseName)) print(store.storeDir.print(p));
    } else for (const out of built.get(p.baseName)?.outputs?.values() ?? []) print(store.storeDir.print(out));
  }
  const errors: Error[] = [...unavailable].map((base) => {
    const full = `${store.storeDir.path}/${base}`;
    return new StrataError('PATH_NOT_VALID', `Cannot realise '${full}': it is not valid and no substituter has it`, { value: full });
  });
  errors.push(...results.filter((r) => r.error).map((r) => r.error!));
  if (errors.length === 0) return;
  // A build cancelled because another failed is not the news: report the failure itself.
  throw errors.find((e) => !(e instanceof StrataError && e.code === 'BUILD_CANCELLED')) ?? errors[0]!;
}
