import type { Command } from 'commander';

import { compareStorePaths, type StorePath } from '../../core/store-path.js';
import type { PathInfo } from '../../store/store.js';
import { printJson, UsageError } from '../output.js';

const MODES = ['references', 'referrers', 'referrersClosure', 'requisites', 'deriver', 'outputs', 'hash', 'size', 'tree', 'graph', 'roots'] as const;
type Mode = (typeof MODES)[number];
const flagOf = (m: Mode) => `--${m.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

export function register(program: Command): void {
  program
    .command('query')
    .description('query store path relations (nix-store -q)')
    .argument('<paths...>', 'store paths')
    .option('--references', 'direct references')
    .option('--referrers', 'paths that refer to it')
    .option('--referrers-closure', 'paths that refer to it, directly or not')
    .option('-R, --requisites', 'the closure')
    .option('-d, --deriver', 'the derivation that produced it')
    .option('--outputs', 'the outputs of a derivation (the default)')
    .option('--hash', 'the NAR hash (sha256, base-32)')
    .option('--size', 'the NAR size in bytes')
    .option('--tree', 'the closure as a tree')
    .option('--graph', 'the closure as a dot graph')
    .option('--roots', 'the GC roots that keep it alive')
    .option('-u, --use-output', "a derivation's outputs instead of the derivation")
    .option('--include-outputs', "with --requisites, the closure's derivations' valid outputs too")
    .action(async (args: string[], opts: Partial<Record<Mode | 'useOutput' | 'includeOutputs', boolean>>, cmd: Command) => {
      // As nix-store -q: --outputs when none is given, one kind of query at a time.
      const chosen = MODES.filter((m) => opts[m]);
      if (chosen.length > 1) throw new UsageError(`Query type '${flagOf(chosen[1]!)}' conflicts with '${flagOf(chosen[0]!)}'`);
      const mode = chosen[0] ?? 'outputs';
      const { withStore, parsePathArg } = await import('../with-store.js');
      const { globalOptions } = await import('../global.js');
      await withStore(cmd, async (store) => {
        const { pathNotValid } = await import('../../core/error.js');
        const dir = store.storeDir;
        const { derivationOutputPaths } = await import('../../store/derivation-add.js');
        const given = args.map((a) => parsePathArg(store, a));
        // -u: a derivation stands for its outputs (not for --deriver, --tree: Nix ignores it there).
        const paths: StorePath[] = [];
        for (const p of given) {
          if (opts.useOutput && p.isDerivation() && mode !== 'deriver' && mode !== 'tree') paths.push(...(await derivationOutputPaths(store, p)).sort(compareStorePaths));
          else paths.push(p);
        }
        const infoOf = async (p: (typeof paths)[number]) => {
          const info = await store.queryPathInfo(p);
          if (!info) throw pathNotValid(dir.print(p));
          return info;
        };
        // As nix-store -q: --deriver, --outputs, --hash and --size answer each argument in turn
        // (repeats included); the relation queries print the union of their answers once,
        // references before referrers. What was answered before a failure is printed, as Nix
        // prints it.
        const lines: string[] = [];
        const json = globalOptions(cmd).json === true;
        try {
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
                const outs = (await derivationOutputPaths(store, p)).map((o) => dir.print(o));
                lines.push(...outs.sort());
              }
              break;
            case 'hash':
            case 'size':
              for (const p of paths) {
                const info = await infoOf(p);
                lines.push(mode === 'hash' ? info.narHash.toString('nix32') : String(info.narSize));
              }
              break;
            case 'tree':
            case 'graph': {
              const { treeLines, graphLines } = await import('../query-graph.js');
              await (mode === 'tree' ? treeLines : graphLines)(store, paths, lines);
              break;
            }
            case 'references':
            case 'referrers':
            case 'referrersClosure':
            case 'requisites': {
              const { computeClosure, topoSortInfos } = await import('../../store/closure.js');
              // Nix orders a path it cannot read as one without references.
              type Node = Pick<PathInfo, 'path' | 'references'>;
              const nodeOf = async (p: StorePath): Promise<Node> => (await store.queryPathInfo(p)) ?? { path: p, references: [] };
              let union: Map<string, Node>;
              if (mode === 'requisites') {
                for (const p of paths) await infoOf(p);
                union = await computeClosure(store, paths);
                // --include-outputs: the valid outputs of every derivation in it, with their
                // closures, until nothing is added.
                for (let more = opts.includeOutputs ? [...union.values()] : []; more.length > 0; ) {
                  const outs: StorePath[] = [];
                  for (const i of more) {
                    if (!i.path.isDerivation()) continue;
                    // The database's table, else (a binary cache has none) the .drv itself.
                    const table = [...(await store.queryDerivationOutputs(i.path)).values()];
                    for (const o of table.length > 0 ? table : await derivationOutputPaths(store, i.path)) if (!union.has(o.baseName) && (await store.isValidPath(o))) outs.push(o);
                  }
                  const added = outs.length > 0 ? [...(await computeClosure(store, outs)).values()].filter((i) => !union.has(i.path.baseName)) : [];
                  for (const i of added) union.set(i.path.baseName, i);
                  more = added;
                }
              } else if (mode === 'referrersClosure') {
                // As Nix's flipped closure: the arguments themselves, valid or not.
                union = new Map();
                const todo = [...paths];
                for (let p = todo.pop(); p !== undefined; p = todo.pop()) {
                  if (union.has(p.baseName)) continue;
                  union.set(p.baseName, await nodeOf(p));
                  todo.push(...(await store.queryReferrers(p)));
                }
              } else {
                // Nix asks a path's references (it must be valid), not a referrer's (no check). An
                // invalid argument fails in the loop, before any line is made: no separate pass.
                union = new Map();
                for (const p of paths) {
                  const related = mode === 'references' ? (await infoOf(p)).references : await store.queryReferrers(p);
                  for (const r of related) {
                    if (union.has(r.baseName)) continue;
                    union.set(r.baseName, await nodeOf(r));
                  }
                }
              }
              for (const i of topoSortInfos(union.values())) lines.push(dir.print(i.path));
              break;
            }
            case 'roots': {
              const { rootsOf } = await import('../roots-query.js');
              // As Nix: only a derivation must be valid (its outputs are looked up); any other
              // path is kept alive by the roots of its referrers, valid or not.
              for (const p of paths) if (p.isDerivation()) await infoOf(p);
              lines.push(...(await rootsOf(store, paths)));
              break;
            }
          }
        } finally {
          if (!json && lines.length > 0) process.stdout.write(`${lines.join('\n')}\n`);
        }
        if (json) printJson(lines);
      });
    });
}
