import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('copy')
    .description('copy store paths between stores and binary caches (nix copy)')
    .argument('<paths...>', 'store paths')
    .option('--from <uri>', 'source store (default: --store, else local)')
    .option('--to <uri>', 'destination store (default: --store, else local)')
    .option('-r, --recursive', 'copy the whole closure')
    .option('-j, --jobs <n>', 'NARs in flight at once', '8')
    .action(async (args: string[], opts: { from?: string; to?: string; recursive?: boolean; jobs: string }, cmd: Command) => {
      const { openStore } = await import('../../store/open.js');
      const { copyPaths } = await import('../../store/copy.js');
      const { globalOptions, storeUri, trustedKeys } = await import('../global.js');
      const { parsePathArg } = await import('../with-store.js');
      const { printJson, UsageError } = await import('../output.js');
      const g = globalOptions(cmd);
      if (!opts.from && !opts.to) throw new UsageError('give --from, --to or both');
      const jobs = Number(opts.jobs);
      if (!Number.isInteger(jobs) || jobs < 1 || jobs > 256) throw new UsageError(`--jobs must be an integer from 1 to 256, not '${opts.jobs}'`);
      const keys = trustedKeys(g);
      const from = await openStore(opts.from ?? storeUri(cmd), { trustedPublicKeys: keys, requireSigs: g.requireSigs });
      // A recursive copy from a cache asks for the closure now: the request runs while the
      // destination opens (~12 ms for a new local store) instead of after it. copyPaths waits
      // for this same request.
      if (opts.recursive && from.prefetchClosure) {
        try {
          from.prefetchClosure(args.map((a) => parsePathArg(from, a))).catch(() => {});
        } catch {
          // A bad path argument: reported below.
        }
      }
      let to;
      try {
        to = await openStore(opts.to ?? storeUri(cmd), { trustedPublicKeys: keys, requireSigs: g.requireSigs });
      } catch (e) {
        await from.close();
        throw e;
      }
      const showBar = g.progress && process.stderr.isTTY === true && !g.quiet;
      let bar: import('cli-progress').SingleBar | undefined;
      try {
        const paths = args.map((a) => parsePathArg(from, a));
        if (showBar) {
          const { SingleBar, Presets } = await import('cli-progress');
          bar = new SingleBar(
            { format: 'copying [{bar}] {paths} paths | {mib}/{totalMib} MiB | {rate} MiB/s', stream: process.stderr, hideCursor: true, clearOnComplete: true },
            Presets.shades_classic,
          );
        }
        const started = Date.now();
        let barStarted = false;
        const result = await copyPaths(from, to, paths, {
          recursive: opts.recursive,
          concurrency: jobs,
          trustedPublicKeys: keys,
          requireSigs: g.requireSigs,
          // Only with a bar to draw: a report per NAR chunk and per path is an object each.
          onProgress: showBar
            ? (p) => {
                if (!bar) return;
                const mib = (n: number) => (n / 1048576).toFixed(1);
                const payload = { paths: `${p.pathsDone}/${p.pathsTotal}`, mib: mib(p.bytesDone), totalMib: mib(p.bytesTotal), rate: mib(p.bytesDone / Math.max(0.001, (Date.now() - started) / 1000)) };
                if (!barStarted) {
                  bar.start(Math.max(1, p.bytesTotal), p.bytesDone, payload);
                  barStarted = true;
                } else bar.update(p.bytesDone, payload);
              }
            : undefined,
        });
        bar?.stop();
        bar = undefined;
        if (g.json) printJson({ copied: result.copied.map((p) => to.storeDir.print(p)), present: result.present.map((p) => to.storeDir.print(p)) });
        else if (!g.quiet) process.stderr.write(`copied ${result.copied.length} paths (${result.present.length} already present)\n`);
      } finally {
        bar?.stop();
        await from.close();
        await to.close();
      }
    });
}
