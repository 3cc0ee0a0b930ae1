/**
 * `strata shell`: a shell or a command inside an environment.
 *
 * The variables point at the logical store dir (`/nix/store/…`), where the packages' own
 * references point too. When the store's files are there already, the command just runs with
 * the variables. When they are elsewhere (a chroot store `/srv/s/nix/store`, a layered store's
 * merged dir), the command runs in a private mount namespace (`unshare --mount --propagation
 * private`, root only) where the real dir is bind-mounted at the logical one; nothing is mounted
 * outside it and it all vanishes with the command. If the logical dir does not exist, its
 * nearest existing parent (not `/`) gets a throwaway overlay inside the namespace so the mount
 * point can be made without touching the host. Without root there is no namespace: a clear
 * error says so.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import { StrataError } from '../core/error.js';
import type { Environment } from './environment.js';
import { applyVariables } from './variables.js';

/** What to run. */
export interface ShellOptions {
  /** Command and arguments; default an interactive `$SHELL` (else `/bin/bash`). */
  command?: string[] | undefined;
  /** The environment to extend (default `process.env`). */
  baseEnv?: NodeJS.ProcessEnv | undefined;
  /** Passed to `spawn` (default `inherit`: the command owns the terminal). */
  stdio?: 'inherit' | 'pipe' | undefined;
  /** Whether this process may make mount namespaces (default: running as root). */
  canMount?: boolean | undefined;
}

/** The process to spawn: a program, its arguments and environment, and a scratch dir to remove after. */
export interface ShellInvocation {
  file: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** Whether a mount namespace is used. */
  namespace: boolean;
  scratch?: string | undefined;
}

// $1 real dir, $2 logical dir, $3 parent to overlay or '-', $4 scratch; then the command.
const WRAPPER = `set -e
real=$1 logical=$2 parent=$3 scratch=$4; shift 4
if [ "$parent" != - ]; then
  mount -t tmpfs strata-shell "$scratch"
  mkdir "$scratch/u" "$scratch/w"
  mount -t overlay strata-shell -o "lowerdir=$parent,upperdir=$scratch/u,workdir=$scratch/w" "$parent"
  mkdir -p "$logical"
fi
mount --bind "$real" "$logical"
exec "$@"`;

/**
 * How the command of `options` is run in `env` (pure apart from looking at the file system).
 *
 * @example shellInvocation(env, { command: ['hello'] }) // { file: 'hello', namespace: false, … }
 */
export function shellInvocation(env: Environment, options: ShellOptions = {}): ShellInvocation {
  const base = options.baseEnv ?? process.env;
  const vars = applyVariables(env.variables, base);
  const command =
    options.command && options.command.length > 0
      ? options.command
      : [base['SHELL'] || '/bin/bash'];
  if (env.realStoreDir === env.storeDir)
    return { file: command[0]!, args: command.slice(1), env: vars, namespace: false };
  const canMount = options.canMount ?? process.getuid?.() === 0;
  if (!canMount) {
    throw new StrataError(
      'SHELL_NEEDS_ROOT',
      `Cannot enter the environment: the store's files are in '${env.realStoreDir}', not at '${env.storeDir}', and mounting them there needs root`,
      {
        value: env.realStoreDir,
        hint: `run as root, or use a store whose files are at '${env.storeDir}'`,
      },
    );
  }
  let parent = '-';
  let scratch: string | undefined;
  if (!existsSync(env.storeDir)) {
    let p = dirname(env.storeDir);
    while (p !== '/' && !existsSync(p)) p = dirname(p);
    if (p === '/') {
      throw new StrataError(
        'SHELL_NO_MOUNT_POINT',
        `Cannot enter the environment: '${env.storeDir}' does not exist and its parent would be '/'`,
        {
          value: env.storeDir,
          hint: `create the mount point once: mkdir -p ${env.storeDir}`,
        },
      );
    }
    parent = p;
    scratch = mkdtempSync(join(tmpdir(), 'strata-shell-'));
  }
  return {
    file: 'unshare',
    args: [
      '--mount',
      '--propagation',
      'private',
      '/bin/sh',
      '-c',
      WRAPPER,
      'strata-shell',
      env.realStoreDir,
      env.storeDir,
      parent,
      scratch ?? '-',
      ...command,
    ],
    env: vars,
    namespace: true,
    scratch,
  };
}

/**
 * Runs a shell or command in the environment and resolves to its exit code (128 + the signal
 * number when killed, as shells report it).
 *
 * @example process.exitCode = await runShell(env, { command: ['sh', '-c', 'hello'] });
 */
export async function runShell(env: Environment, options: ShellOptions = {}): Promise<number> {
  const inv = shellInvocation(env, options);
  if (inv.namespace && spawnSync('unshare', ['--version'], { stdio: 'ignore' }).status !== 0) {
    throw new StrataError(
      'SHELL_NO_UNSHARE',
      "Cannot enter the environment: 'unshare' (util-linux) is not installed",
      { value: 'unshare' },
    );
  }
  // The terminal's Ctrl-C belongs to the command; this process waits for it to end.
  const ignore = () => {};
  process.on('SIGINT', ignore);
  process.on('SIGQUIT', ignore);
  try {
    return await new Promise<number>((resolveExit, reject) => {
      const child = spawn(inv.file, inv.args, { env: inv.env, stdio: options.stdio ?? 'inherit' });
      child.on('error', (e) => {
        // Typed apart, so the CLI exits 127 or 126 as a shell does, and as the namespace's
        // `exec` does for the same command.
        const code = (e as NodeJS.ErrnoException).code;
        const [errorCode, state] =
          code === 'ENOENT'
            ? ['SHELL_COMMAND_NOT_FOUND', 'command not found']
            : code === 'EACCES'
              ? ['SHELL_COMMAND_NOT_EXECUTABLE', 'permission denied']
              : ['SHELL_FAILED', e.message];
        reject(new StrataError(errorCode, `Cannot run '${inv.file}': ${state}`, { value: inv.file }));
      });
      child.on('exit', (code, signal) => {
        if (code !== null) resolveExit(code);
        else resolveExit(128 + (signal ? (signalNumber(signal) ?? 1) : 1));
      });
    });
  } finally {
    process.off('SIGINT', ignore);
    process.off('SIGQUIT', ignore);
    if (inv.scratch) rmSync(inv.scratch, { recursive: true, force: true });
  }
}

function signalNumber(signal: NodeJS.Signals): number | undefined {
  return (constants.signals as Record<string, number | undefined>)[signal];
}
