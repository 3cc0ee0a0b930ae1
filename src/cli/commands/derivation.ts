import type { Command } from 'commander';

export function register(program: Command): void {
  const drv = program.command('derivation').description('write and show store derivations (.drv)');
  drv
    .command('add')
    .description('write a .drv from the JSON of one derivation on stdin and print its path')
    .action(async (_opts: unknown, cmd: Command) => {
      const { readStdin } = await import('../stdin.js');
      const { withStore } = await import('../with-store.js');
      const { print } = await import('../output.js');
      const { addDerivationFromJson } = await import('../../store/derivation-add.js');
      const text = (await readStdin()).toString('utf8');
      await withStore(cmd, async (store) => {
        print(store.storeDir.print(await addDerivationFromJson(store, text)));
      });
    });
  drv
    .command('show')
    .description('show derivations as JSON (nix show-derivation)')
    .argument('<drvs...>', '.drv store paths')
    .action(async (args: string[], _opts: unknown, cmd: Command) => {
      const { withStore, parsePathArg } = await import('../with-store.js');
      const { readDerivation } = await import('../../store/derivation-add.js');
      const { derivationToJson, showDerivationsText } = await import('../../core/derivation/index.js');
      const { compareStorePaths } = await import('../../core/store-path.js');
      await withStore(cmd, async (store) => {
        const out: Record<string, ReturnType<typeof derivationToJson>> = {};
        // As Nix: each path once, in store path order.
        const paths = args.map((a) => parsePathArg(store, a)).sort(compareStorePaths);
        for (const p of paths) out[store.storeDir.print(p)] = derivationToJson(store.storeDir, await readDerivation(store, p));
        process.stdout.write(showDerivationsText(out));
      });
    });
}
