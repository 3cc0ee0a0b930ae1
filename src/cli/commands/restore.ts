/** `strata restore DIR`: unpacks a NAR from stdin (`nix-store --restore`). */
import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('restore')
    .description('unpack a NAR read from stdin into a new path (nix-store --restore)')
    .argument('<path>', 'where to create the file system object; it must not exist')
    .option('--canonicalise', 'give the result Nix store metadata (read-only modes, mtime 1)')
    .action(async (path: string, opts: { canonicalise?: boolean }, cmd: Command) => {
      const { restoreNar } = await import('../../fs/nar-restore.js');
      const { globalOptions } = await import('../global.js');
      const { printJson } = await import('../output.js');
      const { narHash, narSize } = await restoreNar(process.stdin, path, { canonicalise: opts.canonicalise === true });
      // Nix prints nothing; with --json we report what was unpacked.
      if (globalOptions(cmd).json) printJson({ narHash: narHash.toSri(), narSize });
    });
}
