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

/** The flags `commands` declare, each with whether it takes a value (which skips the next argument). */
function flagsOf(...commands: Command[]): Map<string, boolean> {
  const takesValue = new Map<string, boolean>();
  for (const c of commands) {
    for (const o of c.options) {
      for (const flag of [o.long, o.short]) if (flag) takesValue.set(flag, o.required || o.optional);
    }
  }
  return takesValue;
}

/** The index in `argv` of the first argument from `from` on that is not one of `flags` or its value; -1 at an unknown option or the end. */
function firstOperand(argv: readonly string[], from: number, flags: Map<string, boolean>): number {
  for (let i = from; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const value = flags.get(eq > 0 ? a.slice(0, eq) : a);
    if (value === undefined) return a.startsWith('-') ? -1 : i;
    if (value && eq < 0) i++;
  }
  return -1;
}

export function commandNameOf(argv: string[], program: Command): string | undefined {
  // The global options as `main` declared them.
  const i = firstOperand(argv, 2, flagsOf(program));
  return i < 0 ? undefined : argv[i];
}

/**
 * The command line as commander should read it: after `strata shell SPEC`, everything is the
 * command's (`strata shell ./x.nix ls -l`), as after `env` or `sudo`. Commander would take
 * `-l` for an option of `shell`, and `--json` or `-v` anywhere for strata's own, so a `--` goes
 * after SPEC when the user wrote none there.
 */
export function argvForCommander(argv: string[], program: Command, name: string | undefined): string[] {
  const command = name === 'shell' ? program.commands.find((c) => c.name() === name) : undefined;
  if (!command) return argv;
  const at = firstOperand(argv, 2, flagsOf(program));
  // -1: a `--` (or an unknown option, which commander reports) before any spec.
  const spec = firstOperand(argv, at + 1, flagsOf(program, command));
  if (spec < 0 || argv[spec + 1] === '--') return argv;
  return [...argv.slice(0, spec + 1), '--', ...argv.slice(spec + 1)];
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
