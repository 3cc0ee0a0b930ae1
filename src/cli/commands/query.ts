import type { Command } from 'commander';

import { UsageError } from '../output.js';

type Mode = 'references' | 'referrers' | 'requisites' | 'deriver' | 'outputs' | 'roots';
const MODES: Mode[] = ['references', 'referrers', 'requisites', 'deriver', 'outputs', 'roots'];

export function register(program: Command): void {
  program
    .command('query')
    .description('query store path relations (nix-store -q)')
    .argument('<paths...>', 'store paths')
    .option('--references', 'direct references')
    .option('--referrers', 'paths that refer to it')
    .option('--requisites', 'the closure')
    .option('--deriver', 'the derivation that produced it')
    .option('--outputs', 'the outputs of a derivation')
    .option('--roots', 'the GC roots that keep it alive')
    .action(async (args: string[], opts: Partial<Record<Mode, boolean>>, cmd: Command) => {
      const chosen = MODES.filter((m) => opts[m]);
      if (chosen.length !== 1) throw new UsageError('Give exactly one of --references, --referrers, --requisites, --deriver, --outputs, --roots');
      const mode = chosen[0]!;
      const { withStore, parsePathArg } = await import('../with-store.js');
      const { globalOptions } = await import('../global.js');
      await withStore(cmd, async (store) => {
        const { StrataError } = await import('../../core/error.js');
        const dir = store.storeDir;
        const results = new Set<string>();
        for (const arg of args) {
          const p = parsePathArg(store, arg);
          const info = await store.queryPathInfo(p);
          if (!info) throw new StrataError('PATH_NOT_VALID', `Path '${dir.print(p)}' is not valid`, { value: dir.print(p) });
          switch (mode) {
            case 'references':
              for (const r of info.references) results.add(dir.print(r));
              break;
            case 'referrers':
              for (const r of await store.queryReferrers(p)) results.add(dir.print(r));
              break;
            case 'requisites': {
              const { computeClosure, topoSortInfos } = await import('../../store/closure.js');
              for (const i of topoSortInfos((await computeClosure(store, [p])).values())) results.add(dir.print(i.path));
              break;
            }
            case 'deriver':
              results.add(info.deriver ? dir.print(info.deriver) : 'unknown-deriver');
              break;
            case 'outputs': {
              if (!p.isDerivation()) {
                results.add(dir.print(p));
                break;
              }
              for (const o of (await store.queryDerivationOutputs(p)).values()) results.add(dir.print(o));
              break;
            }
            case 'roots': {
              const { rootsOf } = await import('../roots-query.js');
              for (const line of await rootsOf(store, p)) results.add(line);
              break;
            }
          }
        }
        if (globalOptions(cmd).json) process.stdout.write(`${JSON.stringify([...results])}\n`);
        else if (results.size > 0) process.stdout.write(`${[...results].join('\n')}\n`);
      });
    });
}
