import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('init')
    .description('create a layered store: a persistent upper over read-only lowers, and mount it')
    .argument('<dir>', 'where the layered store lives')
    .requiredOption('--lower <uri>', 'a lower store, highest priority first (repeatable)', (v: string, acc: string[] = []) => [...acc, v])
    .option('--substituter <uri>', 'a binary cache to ask when no layer has a path (repeatable)', (v: string, acc: string[] = []) => [...acc, v])
    .action(async (dirArg: string, opts: { lower: string[]; substituter?: string[] }, cmd: Command) => {
      const { resolve } = await import('node:path');
      const { initLayered } = await import('../../store/layered/open-layered.js');
      const { globalOptions } = await import('../global.js');
      const { mountMode } = await import('../../store/layered/mounts.js');
      const dir = resolve(dirArg);
      const keys = (globalOptions(cmd).trustedPublicKeys ?? '').split(/\s+/).filter(Boolean);
      const store = await initLayered(dir, opts.lower, { trustedPublicKeys: keys, substituters: opts.substituter ?? [] });
      await store.close();
      process.stdout.write(`layered:///${dir.replace(/^\/+/, '')}\n`);
      process.stderr.write(`initialised a layered store over ${opts.lower.length} lower(s); its store dir is mounted at ${dir}/nix/store (mount: ${mountMode()})\n`);
    });
}
