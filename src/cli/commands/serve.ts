import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('serve')
    .description('serve a store as a binary cache over HTTP (GET/HEAD, PUT with --writable)')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:8080')
    .option('--sign-key <file>', 'sign narinfos with this secret key file')
    .option('--compression <method>', 'NAR compression offered: none, zstd or xz', 'zstd')
    .option('--compression-level <n>', 'compression level (zstd 1-19, xz 0-9)')
    .option('--priority <n>', 'Priority in nix-cache-info', '30')
    .option('--writable', 'accept uploads (nix copy --to http://…)')
    .action(async (opts: { listen: string; signKey?: string; compression: string; compressionLevel?: string; priority: string; writable?: boolean }, cmd: Command) => {
      const { UsageError } = await import('../output.js');
      const m = /^(\[[0-9a-fA-F:.]+\]|[^:]+):([0-9]{1,5})$/.exec(opts.listen);
      if (!m || Number(m[2]) > 65535) throw new UsageError(`--listen must be HOST:PORT, not '${opts.listen}'`);
      const host = m[1]!.replace(/^\[|\]$/g, '');
      if (!['none', 'zstd', 'xz'].includes(opts.compression)) throw new UsageError(`--compression must be none, zstd or xz, not '${opts.compression}'`);
      const level = opts.compressionLevel === undefined ? undefined : Number(opts.compressionLevel);
      if (level !== undefined && !Number.isInteger(level)) throw new UsageError(`--compression-level must be an integer, not '${opts.compressionLevel}'`);
      const priority = Number(opts.priority);
      if (!Number.isInteger(priority)) throw new UsageError(`--priority must be an integer, not '${opts.priority}'`);
      const { readFileSync } = await import('node:fs');
      const { parseSecretKey } = await import('../../core/signature.js');
      const signKey = opts.signKey ? parseSecretKey(readFileSync(opts.signKey, 'utf8')) : undefined;
      const { openStore } = await import('../../store/open.js');
      const { storeUri, globalOptions } = await import('../global.js');
      const { CacheServer } = await import('../../serve/cache-server.js');
      const { listen } = await import('../../serve/listen.js');
      const g = globalOptions(cmd);
      const store = await openStore(storeUri(cmd));
      const server = new CacheServer(store, { signKey, compression: opts.compression as 'none' | 'zstd' | 'xz', compressionLevel: level, writable: opts.writable, priority });
      const l = await listen(server, { host, port: Number(m[2]) }).catch(async (e: unknown) => {
        await store.close();
        throw e;
      });
      process.stdout.write(`${l.url}\n`);
      if (!g.quiet) process.stderr.write(`serving '${store.uri}' on ${l.url}${opts.writable ? ' (writable)' : ''}\n`);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await l.close();
      await server.close();
      await store.close();
    });
}
