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
      const { stdinChunksReused } = await import('../stdin.js');
      await withStore(cmd, async (store) => {
        // Printed as each batch becomes valid, as Nix prints each path it imported.
        const added = (paths: StorePath[]) => {
          if (paths.length > 0) print(paths.map((p) => store.storeDir.print(p)).join('\n'));
        };
        // A local store restores each NAR as it is read; others take whole NARs.
        // The local store keeps nothing of a chunk once it asks for the next: one reused buffer.
        // A fresh 1 MiB buffer per read (fs.ReadStream) cost a page fault per 4 KiB of input,
        // ~11,000 for the 43 MiB bench import: most of the system time strata spent beyond Nix's.
        if (store instanceof LocalStore) await store.addFromExport(stdinChunksReused(256 * 1024), added);
        // Others keep NARs whole (views of the chunks): a fresh buffer per read, 1 MiB reads.
        else await importExport(store, createReadStream('', { fd: 0, highWaterMark: 1024 * 1024, autoClose: false }), added);
      });
    });
}
