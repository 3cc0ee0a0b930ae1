import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('fsck')
    .description('cross-layer consistency: dangling references, whiteouts over lower paths, duplicates')
    .option('--repair', 'fix what can be fixed, say what cannot')
    .action(async (opts: { repair?: boolean }, cmd: Command) => {
      const { withStore } = await import('../with-store.js');
      const { globalOptions } = await import('../global.js');
      const { printJson } = await import('../output.js');
      const { fsck } = await import('../../store/layered/fsck.js');
      const { LayeredStore } = await import('../../store/layered/layered-store.js');
      const { StrataError } = await import('../../core/error.js');
      await withStore(cmd, async (store) => {
        if (!(store instanceof LayeredStore)) throw new StrataError('NOT_LAYERED', `Cannot check '${store.uri}': fsck is for layered stores`, { value: store.uri });
        const report = await fsck(store, { repair: opts.repair === true });
        if (globalOptions(cmd).json) printJson(report);
        else {
          for (const p of report.problems) process.stdout.write(`${p.kind}: ${p.path}: ${p.detail}\n`);
          for (const p of report.repaired) process.stdout.write(`repaired: ${p}\n`);
          for (const p of report.unrepaired) process.stdout.write(`cannot repair: ${p}\n`);
          if (report.problems.length === 0) process.stderr.write('no problems found\n');
        }
        const remaining = opts.repair ? report.unrepaired.length : report.problems.filter((p) => p.kind !== 'duplicate').length;
        if (remaining > 0) process.exitCode = 1;
      });
    });
}
