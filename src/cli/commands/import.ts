/** `strata import`: adds the paths of a `nix-store --export` stream read from stdin (`nix-store --import`). */
import type { Command } from 'commander';

import type { StorePath } from '../../core/store-path.js';

export function register(program: Command): void {
  program
    .command('import')
    .description("add the paths of a 'nix-store --export' stream read from stdin, and print them (nix-store --import)")
    .action(async (_opts: unknown, cmd: Command) => {
      const { createReadStream } = await import('node:fs');
      const { importExport } = await import('../../store/nar-export.js');
      const { LocalStore } = await import('../../store/local/local-store.js');
      const { withStore } = await import('../with-store.js');
      const { print } = await import('../output.js');
      // 1 MiB reads: an export is one long stream (the default 64 KiB means 16× the reads).
      const stdin = createReadStream('', { fd: 0, highWaterMark: 1024 * 1024, autoClose: false });
      await withStore(cmd, async (store) => {
        // Printed as each batch becomes valid, as Nix prints each path it imported.
        const added = (paths: StorePath[]) => {
          if (paths.length > 0) print(paths.map((p) => store.storeDir.print(p)).join('\n'));
        };
        // A local store restores each NAR as it is read; others take whole NARs.
        if (store instanceof LocalStore) await store.addFromExport(stdin, added);
        else await importExport(store, stdin, added);
      });
    });
}
