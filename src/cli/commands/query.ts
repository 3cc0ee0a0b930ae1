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
        const paths = args.map((a) => parsePathArg(store, a));
        const infoOf = async (p: (typeof paths)[number]) => {
          const info = await store.queryPathInfo(p);
          if (!info) throw new StrataError('PATH_NOT_VALID', `Path '${dir.print(p)}' is not valid`, { value: dir.print(p) });
          return info;
        };
        // As nix-store -q: --deriver and --outputs answer each argument in turn (repeats
        // included); the relation queries print the union of their answers once, references
        // before referrers.
        const lines: string[] = [];
        switch (mode) {
          case 'deriver':
            for (const p of paths) {
              const info = await infoOf(p);
              lines.push(info.deriver ? dir.print(info.deriver) : 'unknown-deriver');
            }
            break;
          case 'outputs':
            for (const p of paths) {
              // A path that is not a derivation is its own output, valid or not, as in Nix.
              if (!p.isDerivation()) {
                lines.push(dir.print(p));
                continue;
              }
              await infoOf(p);
              const outs = [...(await store.queryDerivationOutputs(p)).values()].map((o) => dir.print(o));
              lines.push(...outs.sort());
            }
            break;
          case 'references':
          case 'referrers':
          case 'requisites': {
            const { computeClosure, topoSortInfos } = await import('../../store/closure.js');
            for (const p of paths) await infoOf(p);
            let union: Map<string, Awaited<ReturnType<typeof infoOf>>>;
            if (mode === 'requisites') union = await computeClosure(store, paths);
            else {
              union = new Map();
              for (const p of paths) {
                const related = mode === 'references' ? (await infoOf(p)).references : await store.queryReferrers(p);
                for (const r of related) {
                  if (union.has(r.baseName)) continue;
                  const info = await store.queryPathInfo(r);
                  // Nix orders a path it cannot read as one without references.
                  union.set(r.baseName, info ?? { ...(await infoOf(p)), path: r, references: [] });
                }
              }
            }
            for (const i of topoSortInfos(union.values())) lines.push(dir.print(i.path));
            break;
          }
          case 'roots': {
            const { rootsOf } = await import('../roots-query.js');
            for (const p of paths) await infoOf(p);
            lines.push(...(await rootsOf(store, paths)));
            break;
          }
        }
        if (globalOptions(cmd).json) process.stdout.write(`${JSON.stringify(lines)}\n`);
        else if (lines.length > 0) process.stdout.write(`${lines.join('\n')}\n`);
      });
    });
}
