import type { Command } from 'commander';

import { UsageError } from '../output.js';

export function register(program: Command): void {
  program
    .command('add')
    .description('add a file or tree to the store and print its path (nix-store --add, --add-fixed)')
    .argument('<path>', 'file or directory to add')
    .option('--name <name>', 'store path name (default: the base name)')
    .option('--flat', 'hash the file contents instead of its NAR (a regular file only)')
    .option('--hash-algo <algo>', 'md5, sha1, sha256 or sha512', 'sha256')
    .action(async (path: string, opts: { name?: string; flat?: boolean; hashAlgo: string }, cmd: Command) => {
      const { isHashAlgo } = await import('../../core/hash.js');
      if (!isHashAlgo(opts.hashAlgo)) throw new UsageError(`Unknown hash algorithm '${opts.hashAlgo}'`);
      const { resolve } = await import('node:path');
      const { withStore } = await import('../with-store.js');
      const { print } = await import('../output.js');
      await withStore(cmd, async (store) => {
        const info = await store.addPath(resolve(path), {
          ...(opts.name !== undefined ? { name: opts.name } : {}),
          method: opts.flat ? 'flat' : 'recursive',
          hashAlgo: opts.hashAlgo as 'sha256',
        });
        print(store.storeDir.print(info.path));
      });
    });
}
