/**
 * Which module declares each top-level command, so `main` loads only the one being run. Node 20
 * reads every ESM module through its thread pool (open, stat, read, close): each costs about a
 * millisecond of start-up here, and the 20-odd command modules were a third of
 * `strata path-info`'s own start-up (bench/startup.ts). This table is the one list of commands:
 * help and unknown names register every module from it.
 */
import type { Command } from 'commander';

type Loader = () => Promise<{ register(program: Command): void }>;

export const COMMAND_MODULES: Readonly<Record<string, Loader>> = {
  add: () => import('./commands/add.js'),
  'path-info': () => import('./commands/path-info.js'),
  query: () => import('./commands/query.js'),
  derivation: () => import('./commands/derivation.js'),
  sign: () => import('./commands/sign.js'),
  dump: () => import('./commands/dump.js'),
  restore: () => import('./commands/restore.js'),
  import: () => import('./commands/import.js'),
  hash: () => import('./commands/hash.js'),
  gc: () => import('./commands/gc.js'),
  delete: () => import('./commands/delete.js'),
  verify: () => import('./commands/verify.js'),
  optimise: () => import('./commands/optimise.js'),
  key: () => import('./commands/key.js'),
  realise: () => import('./commands/realise.js'),
  init: () => import('./commands/init.js'),
  mount: () => import('./commands/mount.js'),
  umount: () => import('./commands/mount.js'),
  remount: () => import('./commands/mount.js'),
  layers: () => import('./commands/layers.js'),
  fsck: () => import('./commands/fsck.js'),
  copy: () => import('./commands/copy.js'),
  serve: () => import('./commands/serve.js'),
  env: () => import('./commands/env.js'),
  shell: () => import('./commands/shell.js'),
};

export function commandNameOf(argv: string[], program: Command): string | undefined {
  // The global options as `main` declared them: those that take a value skip the next argument.
  const takesValue = new Map<string, boolean>();
  for (const o of program.options) {
    for (const flag of [o.long, o.short]) if (flag) takesValue.set(flag, o.required || o.optional);
  }
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    const value = takesValue.get(flag);
    if (value === undefined) return a.startsWith('-') ? undefined : a;
    if (value && eq < 0) i++;
  }
  return undefined;
}

/** Declares every command (for help and anything the table does not name), each module once, in table order. */
export async function registerAllCommands(program: Command): Promise<void> {
  const seen = new Set<unknown>();
  for (const load of Object.values(COMMAND_MODULES)) {
    const m = await load();
    if (seen.has(m)) continue;
    seen.add(m);
    m.register(program);
  }
}
