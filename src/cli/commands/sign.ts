import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('sign')
    .description('sign store paths with a secret key (nix store sign)')
    .argument('<paths...>', 'store paths')
    .requiredOption('--key-file <file>', 'secret key file (as made by strata key generate)')
    .option('-r, --recursive', 'sign the whole closure')
    .action(async (args: string[], opts: { keyFile: string; recursive?: boolean }, cmd: Command) => {
      const { readFileSync } = await import('node:fs');
      const { parseSecretKey, signPathInfo } = await import('../../core/signature.js');
      const { withStore, parsePathArg } = await import('../with-store.js');
      const key = parseSecretKey(readFileSync(opts.keyFile, 'utf8'));
      await withStore(cmd, async (store) => {
        const { computeClosure } = await import('../../store/closure.js');
        const { StrataError } = await import('../../core/error.js');
        const paths = args.map((a) => parsePathArg(store, a));
        const infos = opts.recursive
          ? [...(await computeClosure(store, paths)).values()]
          : await Promise.all(
              paths.map(async (p) => {
                const info = await store.queryPathInfo(p);
                if (!info) throw new StrataError('PATH_NOT_VALID', `Cannot sign '${store.storeDir.print(p)}': it is not valid`, { value: store.storeDir.print(p) });
                return info;
              }),
            );
        let added = 0;
        for (const info of infos) {
          const signed = signPathInfo(store.storeDir, info, key);
          const fresh = signed.sigs.filter((s) => !info.sigs.includes(s));
          if (fresh.length > 0) {
            await store.addSignatures(info.path, fresh);
            added += fresh.length;
          }
        }
        process.stderr.write(`added ${added} signatures\n`);
      });
    });
}
