/**
 * `strata hash path|file PATH...`: hashes as `nix hash path` / `nix hash file` print them. Like
 * Nix 2.8, the default is SRI and, when several format flags are given, the last one wins.
 */
import type { Command } from 'commander';

type Format = 'sri' | 'base16' | 'base32' | 'base64';

function hashCommand(parent: Command, kind: 'path' | 'file', description: string): void {
  let format: Format = 'sri';
  const cmd = parent
    .command(kind)
    .description(description)
    .argument('<paths...>', 'files or directories to hash')
    .option('--type <algo>', 'hash algorithm: md5, sha1, sha256 or sha512', 'sha256')
    .option('--sri', 'print `<algo>-<base64>` (the default)')
    .option('--base16', 'print lowercase hex')
    .option('--base32', 'print nix32')
    .option('--base64', 'print base64');
  for (const f of ['sri', 'base16', 'base32', 'base64'] as const) cmd.on(`option:${f}`, () => (format = f));
  cmd.action(async (paths: string[], opts: { type: string }) => {
    const { isHashAlgo } = await import('../../core/hash.js');
    const { UsageError } = await import('../output.js');
    if (!isHashAlgo(opts.type)) throw new UsageError(`Cannot use hash algorithm '${opts.type}': expected md5, sha1, sha256 or sha512`);
    const { hashFile, hashPath } = await import('../../fs/hash-path.js');
    const lines: string[] = [];
    for (const p of paths) {
      const hash = kind === 'path' ? (await hashPath(p, opts.type)).hash : await hashFile(p, opts.type);
      lines.push(format === 'sri' ? hash.toSri() : hash.encode(format === 'base32' ? 'nix32' : format));
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  });
}

export function register(program: Command): void {
  const hash = program.command('hash').description('hash files and file system objects (nix hash)');
  hashCommand(hash, 'path', 'hash the NAR serialisation of each path (nix hash path)');
  hashCommand(hash, 'file', 'hash the plain contents of each file (nix hash file)');
}
