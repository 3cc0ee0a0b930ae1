import type { Command } from 'commander';

import { compareStorePaths, type StorePath } from '../../core/store-path.js';
import type { PathInfo, Store } from '../../store/store.js';
import { printJson, UsageError } from '../output.js';

interface PathInfoOptions {
  recursive?: boolean;
  size?: boolean;
  closureSize?: boolean;
  humanReadable?: boolean;
  sigs?: boolean;
  derivation?: boolean;
  all?: boolean;
}

export function register(program: Command): void {
  program
    .command('path-info')
    .description('show metadata of store paths (nix path-info)')
    .argument('[paths...]', 'store paths')
    .option('--all', 'every valid path of the store')
    .option('-r, --recursive', 'the whole closure of each path')
    .option('-s, --size', 'also the NAR size of each path')
    .option('-S, --closure-size', 'also the closure size of each path')
    .option('-h, --human-readable', 'with -s and -S, sizes such as 5.7M')
    .option('--sigs', 'also the signatures of each path')
    .option('--derivation', "a derivation itself rather than its outputs, and other paths' derivers")
    // -h is --human-readable here, as in nix path-info; help stays --help.
    .helpOption('--help', 'display help for command')
    .action(async (args: string[], opts: PathInfoOptions, cmd: Command) => {
      const { withStore, parsePathArg } = await import('../with-store.js');
      const { globalOptions } = await import('../global.js');
      const json = globalOptions(cmd).json === true; // keys of nix path-info --json, plus "layer"
      await withStore(cmd, async (store) => {
        const { pathInfoJson, invalidPathJson } = await import('../path-info-json.js');
        // The closure module when -r, -S or the text output's order needs it: plain --json reads
        // one module less at start-up.
        const closures = opts.recursive || opts.closureSize || !json ? await import('../../store/closure.js') : undefined;
        const { pathNotValid } = await import('../../core/error.js');
        const dir = store.storeDir;
        if (opts.all && args.length > 0) throw new UsageError("'--all' does not expect arguments");
        const paths = opts.all ? await store.queryAllValidPaths() : await installables(store, args.map((a) => parsePathArg(store, a)), opts.derivation === true);
        // A set, as in Nix: a path named twice is shown once. With -r, the closure's infos are
        // what queryPathInfo gives (the Store contract), so no member is asked for again.
        const closure = opts.recursive ? await closures!.computeClosure(store, paths) : undefined;
        const targets = closure ? [...closure.values()].map((i) => i.path) : [...new Map(paths.map((p) => [p.baseName, p])).values()];
        targets.sort(compareStorePaths);
        const out: Record<string, unknown>[] = [];
        const shown: { info: PathInfo; closureSize: number | undefined }[] = [];
        let missing: string | undefined;
        const found: [StorePath, PathInfo | undefined][] = [];
        for (const p of targets) found.push([p, closure ? closure.get(p.baseName) : await store.queryPathInfo(p)]);
        // -S: one closure of every valid target, summed per member (closure.ts), not a walk per
        // target. The NAR files' sizes too, for a binary cache's paths (Nix counts 0 where unknown).
        const totals = opts.closureSize
          ? closures!.closureTotals((closure ?? (await closures!.computeClosure(store, found.flatMap(([p, i]) => (i ? [p] : []))))).values(), (i) => [i.narSize, (i as { fileSize?: number }).fileSize ?? 0])
          : undefined;
        for (const [p, info] of found) {
          if (!info) {
            out.push(invalidPathJson(dir, p));
            missing ??= dir.print(p);
            continue;
          }
          const [closureSize, closureDownloadSize] = totals?.get(p.baseName) ?? [];
          out.push(pathInfoJson(dir, info, closureSize !== undefined ? { closureSize, closureDownloadSize } : {}));
          shown.push({ info, closureSize });
        }
        if (json) {
          printJson(out);
          return;
        }
        // As in Nix: JSON marks invalid paths `"valid": false` and succeeds; text output fails
        // and prints nothing.
        if (missing !== undefined) throw pathNotValid(missing);
        // Text lists references before their referrers (Nix's topological order), paths padded
        // to one width when columns follow: sizes, then signatures.
        const { formatNixSize } = await import('../output.js');
        const byName = new Map(shown.map((s) => [s.info.path.baseName, s]));
        const ordered = closures!.topoSortInfos(shown.map((s) => s.info)).map((i) => byName.get(i.path.baseName)!);
        const width = Math.max(0, ...ordered.map((s) => dir.print(s.info.path).length));
        const columns = opts.size || opts.closureSize || opts.sigs;
        const size = (n: number) => `\t${formatNixSize(n, opts.humanReadable === true)}`;
        const lines = ordered.map(({ info, closureSize }) => {
          let line = columns ? dir.print(info.path).padEnd(width) : dir.print(info.path);
          if (opts.size) line += size(info.narSize);
          if (closureSize !== undefined) line += size(closureSize);
          if (opts.sigs) line += `\t${[...(info.ultimate ? ['ultimate'] : []), ...(info.ca ? [`ca:${info.ca}`] : []), ...info.sigs].join(' ')}`;
          return line;
        });
        if (lines.length > 0) process.stdout.write(`${lines.join('\n')}\n`);
      });
    });
}

/**
 * The paths arguments stand for, as `nix path-info` 2.8 takes them: a derivation stands for its
 * outputs (whether built or not), or with --derivation for itself, and another path with
 * --derivation for its valid deriver.
 */
async function installables(store: Store, paths: StorePath[], derivation: boolean): Promise<StorePath[]> {
  const { pathNotValid, StrataError } = await import('../../core/error.js');
  const out: StorePath[] = [];
  for (const p of paths) {
    if (!p.isDerivation() && !derivation) {
      out.push(p);
    } else if (p.isDerivation() && derivation) {
      // Nix reads the derivation even to show it: it must be valid, with --json too.
      if (!(await store.isValidPath(p))) throw pathNotValid(store.storeDir.print(p));
      out.push(p);
    } else if (derivation) {
      const [deriver] = (await store.queryValidDerivers(p)).sort(compareStorePaths);
      if (!deriver) throw new StrataError('NO_DERIVER', `Cannot find the derivation of '${store.storeDir.print(p)}': it has no known valid deriver`, { value: store.storeDir.print(p) });
      out.push(deriver);
    } else {
      const { derivationOutputPaths } = await import('../../store/derivation-add.js');
      out.push(...(await derivationOutputPaths(store, p)));
    }
  }
  return out;
}
