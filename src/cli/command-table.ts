/**
 * Which module declares each top-level command, so `main` loads only the one being run. Node 20
 * reads every ESM module through its thread pool (open, stat, read, close): each costs about a
 * millisecond of start-up here, and the 20-odd command modules were a third of
 * `strata path-info`'s own start-up (bench/startup.ts). A command missing from this table still
 * works: `main` then registers every module, as before.
 */
type Loader = () => Promise<{ register(program: import('commander').Command): void }>;

export const COMMAND_MODULES: Readonly<Record<string, Loader>> = {
  add: () => import('./commands/add.js'),
  'path-info': () => import('./commands/path-info.js'),
  query: () => import('./commands/query.js'),
  derivation: () => import('./commands/derivation.js'),
  sign: () => import('./commands/sign.js'),
  dump: () => import('./commands/dump.js'),
  restore: () => import('./commands/restore.js'),
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

/** Global options of `main` that take a value (the next argument unless given with `=`). */
const VALUE_OPTIONS = new Set(['--store', '--trusted-public-keys']);
const FLAG_OPTIONS = new Set([
  '--json',
  '-v',
  '--verbose',
  '--quiet',
  '--no-progress',
  '--no-require-sigs',
]);

/**
 * The command named in `argv` (node, script, global options, command…) when the global options
 * before it are all ones we know; undefined otherwise (help, version, anything unusual), and then
 * every command is declared so commander answers exactly as it always did.
 */
export function commandNameOf(argv: string[]): string | undefined {
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]!;
    if (VALUE_OPTIONS.has(a)) i++;
    else if (FLAG_OPTIONS.has(a) || [...VALUE_OPTIONS].some((o) => a.startsWith(`${o}=`))) continue;
    else return a.startsWith('-') ? undefined : a;
  }
  return undefined;
}
