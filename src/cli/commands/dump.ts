/** `strata dump PATH`: the NAR of a file system object on stdout (`nix-store --dump`). */
import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('dump')
    .description('write the NAR serialisation of a file, directory or symlink to stdout (nix-store --dump)')
    .argument('<path>', 'the file system object to serialise (a symlink is stored, not followed)')
    .action(async (path: string) => {
      const { pipeline } = await import('node:stream/promises');
      const { dumpPath } = await import('../../fs/nar-dump.js');
      await pipeline(dumpPath(path), process.stdout);
    });
}
