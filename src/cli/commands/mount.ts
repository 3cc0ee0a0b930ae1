import type { Command } from 'commander';

/** `strata mount`, `umount` and `remount`: the managed overlay mount of a layered store. */
export function register(program: Command): void {
  program
    .command('mount')
    .description('mount a layered store (picks up new lower generations, rescuing what the upper needs)')
    .argument('[dir]', 'the layered store (default: --store layered:///dir)')
    .action(async (dirArg: string | undefined, _opts: unknown, cmd: Command) => {
      const { layeredDir } = await import('../layered-arg.js');
      const { openLayered } = await import('../../store/layered/open-layered.js');
      const dir = layeredDir(cmd, dirArg);
      const store = await openLayered(`layered://${dir}`, dir, { onMount: (s) => report(s) });
      await store.close();
    });
  program
    .command('umount')
    .description('unmount a layered store (upper data stays)')
    .argument('[dir]', 'the layered store (default: --store layered:///dir)')
    .action(async (dirArg: string | undefined, _opts: unknown, cmd: Command) => {
      const { layeredDir } = await import('../layered-arg.js');
      const { isMounted } = await import('../../store/layered/open-layered.js');
      const { unmountOverlay } = await import('../../store/layered/mounts.js');
      const { layeredPaths } = await import('../../store/layered/config.js');
      const dir = layeredDir(cmd, dirArg);
      if (!isMounted(dir)) {
        process.stderr.write(`${dir} is not mounted\n`);
        return;
      }
      unmountOverlay(layeredPaths(dir).merged);
      process.stderr.write(`unmounted ${layeredPaths(dir).merged}\n`);
    });
  program
    .command('remount')
    .description('unmount and mount again (resets overlay caches, picks up changed lowers)')
    .argument('[dir]', 'the layered store (default: --store layered:///dir)')
    .action(async (dirArg: string | undefined, _opts: unknown, cmd: Command) => {
      const { layeredDir } = await import('../layered-arg.js');
      const { openLayered, ensureMounted } = await import('../../store/layered/open-layered.js');
      const dir = layeredDir(cmd, dirArg);
      // Through the same generation check and rescue as `mount`, but always a fresh mount.
      const store = await openLayered(`layered://${dir}`, dir, { mount: false });
      try {
        report(await ensureMounted(dir, store.lowers, store.upper, { force: true }));
      } finally {
        await store.close();
      }
    });
}

function report(s: { action: string; reason?: string | undefined; layout: { mergedDir: string }; rescued: string[]; lost: string[] }): void {
  const what = s.action === 'none' ? 'already mounted' : s.action;
  process.stderr.write(`${s.layout.mergedDir}: ${what}${s.reason ? ` (${s.reason})` : ''}\n`);
  for (const p of s.rescued) process.stderr.write(`rescued ${p} from the previous lower generation into the upper layer\n`);
  for (const p of s.lost) process.stderr.write(`warning: ${p} is in no layer any more; run 'strata fsck --repair'\n`);
}
