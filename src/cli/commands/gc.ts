/**
 * `strata gc`: collect garbage (`nix-store --gc`). As in Nix, progress (`deleting '…'`) goes to
 * stderr and the result to stdout: the listed paths with `--print-*`, else
 * `N store paths deleted, X MiB freed`.
 */
import type { Command } from 'commander';

import { UsageError } from '../output.js';

/** Parses a byte count with Nix's optional K/M/G/T suffix (powers of 1024). */
export function parseBytes(s: string): number {
  const m = /^(\d+)([KMGT]?)$/i.exec(s.trim());
  if (!m) throw new UsageError(`Cannot parse byte count '${s}': expected digits with an optional K, M, G or T suffix`);
  const power = ' KMGT'.indexOf((m[2] || ' ').toUpperCase());
  return Number(m[1]) * 1024 ** power;
}

export function register(program: Command): void {
  program
    .command('gc')
    .description('delete unreachable store paths (nix-store --gc)')
    .option('--max-freed <bytes>', 'stop after freeing this many bytes (K, M, G, T suffixes)')
    .option('--print-dead', 'list the paths that would be deleted, delete nothing')
    .option('--print-live', 'list the paths that are alive, delete nothing')
    .option('--print-roots', 'list the GC roots (link -> path)')
    .option('--dry-run', 'show what would be deleted, delete nothing')
    .action(async (opts: { maxFreed?: string; printDead?: boolean; printLive?: boolean; printRoots?: boolean; dryRun?: boolean }, cmd: Command) => {
      const modes = [opts.printDead, opts.printLive, opts.printRoots].filter(Boolean).length;
      if (modes > 1) throw new UsageError('Give at most one of --print-dead, --print-live, --print-roots');
      const maxFreed = opts.maxFreed !== undefined ? parseBytes(opts.maxFreed) : undefined;
      const { withStore } = await import('../with-store.js');
      const { globalOptions } = await import('../global.js');
      const { print, printJson } = await import('../output.js');
      const g = globalOptions(cmd);
      const report = (level: 'info' | 'warn', message: string): void => {
        if (level === 'warn' || !g.quiet) process.stderr.write(`${level === 'warn' ? 'warning: ' : ''}${message}\n`);
      };
      await withStore(cmd, async (store) => {
        const { LocalStore } = await import('../../store/local/local-store.js');
        if (opts.printRoots) {
          if (!(store instanceof LocalStore)) throw new UsageError(`Store '${store.uri}' has no GC roots`);
          const { findRoots } = await import('../../store/local/roots.js');
          const pairs: Array<[string, string]> = [];
          for (const [path, links] of await findRoots(store)) for (const l of links) pairs.push([l, path]);
          pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : 1));
          if (g.json) printJson(pairs.map(([link, path]) => ({ link, path })));
          else for (const [l, p] of pairs) print(`${l} -> ${p}`);
          return;
        }
        const printSet = opts.printLive ? 'live' : opts.printDead || opts.dryRun ? 'dead' : undefined;
        const options = {
          ...(maxFreed !== undefined ? { maxFreed } : {}),
          ...(printSet ? { print: printSet as 'live' | 'dead', dryRun: true } : {}),
        };
        let result;
        if (store instanceof LocalStore) {
          const { collectGarbage } = await import('../../store/local/gc.js');
          result = await collectGarbage(store, { ...options, report });
        } else {
          result = await store.collectGarbage(options);
        }
        const dir = store.storeDir;
        const junk = 'junk' in result ? (result.junk as string[]) : [];
        if (printSet) {
          const listed = [...(result.paths ?? []).map((p) => dir.print(p)), ...(printSet === 'dead' ? junk : [])].sort();
          if (g.json) printJson({ [printSet]: listed });
          else for (const p of listed) print(p);
          if (opts.dryRun && !g.json) report('info', `${listed.length} store paths would be deleted`);
          return;
        }
        const deleted = [...result.deleted.map((p) => dir.print(p)), ...junk];
        if (g.json) {
          printJson({ deleted, bytesFreed: result.bytesFreed });
        } else {
          const { showMiB } = await import('../../store/local/gc.js');
          print(`${deleted.length} store paths deleted, ${showMiB(result.bytesFreed)} freed`);
        }
      });
    });
}
