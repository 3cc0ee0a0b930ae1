/**
 * Spawning a builder, in one of three ways:
 *
 * - `session` (root, the usual case): `nsenter` into the run's shared build namespace
 *   (namespace.ts), where the store is an overlay at its logical path; the environment goes
 *   straight to the builder. Two execs per build.
 * - `overlay` (root, rare): a namespace of its own (`unshare --mount --propagation private`),
 *   with the same overlay plus whiteouts hiding outputs that already exist below (an output
 *   already valid in a partially built multi-output derivation), so the builder starts from an
 *   empty `$out` as in Nix. Costs ~70 ms more (mount and teardown), hence not the default.
 * - `none` (not root, store at its logical path): the builder runs directly and writes into the
 *   store; nothing stops it writing elsewhere in the store.
 *
 * Why an overlay at all: outputs may be files or directories and do not exist before the build,
 * so nothing can be bind-mounted at them in advance. With the overlay the builder can create its
 * outputs (and, to its surprise, anything else) while the real store stays untouched: every
 * write lands in the upper dir, where register-outputs.ts takes the outputs and refuses any other
 * entry ("builder wrote outside $out"). A failed build leaves nothing in the store.
 *
 * In the `overlay` and `none` ways a small `sh` wrapper sets the mounts and the umask up and
 * hands over the environment with `env -i`, not through the shell: dash drops variables whose
 * names are not shell identifiers (`env -i a-b=1 sh -c env` prints nothing).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { StrataError } from '../core/error.js';
import { type BuildNamespace, OVERLAY_MOUNT_SH, overlaySetupArgs } from './namespace.js';

/** How the builder is isolated. */
export type Isolation =
  | {
      kind: 'session';
      /** The run's shared build namespace. */
      namespace: BuildNamespace;
    }
  | {
      kind: 'overlay';
      /** The store's files on this machine (the overlay's lower). */
      realStoreDir: string;
      /** The logical store dir, where the builder sees the store. */
      logicalStoreDir: string;
      /** Empty directories on one file system, not inside the store: overlay upper and work. */
      upperDir: string;
      workDir: string;
      /** Scratch for a tmpfs when the logical store dir has to be created inside the namespace. */
      scratchDir: string;
      /** Output base names that exist in the real store dir and must look absent. */
      whiteouts: string[];
    }
  | { kind: 'none' };

/** What to run. */
export interface BuilderInvocation {
  builder: string;
  args: string[];
  env: Map<string, string>;
  /** The build directory (cwd). */
  buildDir: string;
  isolation: Isolation;
  /** The log, the builder's stdout and stderr: an open descriptor and its path. */
  logFd: number;
  logPath: string;
  signal?: AbortSignal | undefined;
}

/** How the builder ended. */
export interface BuilderExit {
  /** Exit status, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
}

// $1 mode, then for overlay: real logical upper work scratch parent nwhiteouts whiteouts...;
// then `--` and the env assignments, builder and args for `env -i`.
const WRAPPER = `set -e
umask 022
mode=$1; shift
if [ "$mode" = overlay ]; then
  real=$1 logical=$2 upper=$3 work=$4 scratch=$5 parent=$6 n=$7; shift 7
  while [ "$n" -gt 0 ]; do mknod "$upper/$1" c 0 0; shift; n=$((n - 1)); done
${OVERLAY_MOUNT_SH}fi
shift
exec 2>&1
exec env -i "$@"
`;

let nsenterPath: string | undefined;

/** Absolute path of `nsenter`: spawn() would look it up in the builder's PATH (`/path-not-set`). */
function nsenter(): string {
  if (nsenterPath !== undefined) return nsenterPath;
  for (const d of [
    ...(process.env['PATH'] ?? '').split(':'),
    '/usr/bin',
    '/bin',
    '/usr/sbin',
    '/sbin',
  ]) {
    if (d !== '' && existsSync(join(d, 'nsenter'))) return (nsenterPath = join(d, 'nsenter'));
  }
  throw new StrataError(
    'BUILD_SETUP_FAILED',
    "Cannot enter the build namespace: 'nsenter' (util-linux) is not installed",
    { value: 'nsenter' },
  );
}

/** True when this process can create mount namespaces (it runs as root). */
export function canIsolate(): boolean {
  return process.getuid?.() === 0;
}

/**
 * Runs the builder to completion, feeding its stdout and stderr (one stream, as in Nix) to the
 * log. The builder starts in a new session; when it exits, whatever it left running in its
 * process group is killed. An aborted signal kills the whole group.
 *
 * @example
 * ```ts
 * const exit = await runBuilder({ builder: '/bin/sh', args: ['-c', 'echo hi > $out'], env, buildDir, isolation: { kind: 'none' }, log });
 * ```
 */
export async function runBuilder(inv: BuilderInvocation): Promise<BuilderExit> {
  const iso = inv.isolation;
  if (iso.kind === 'session' && iso.namespace.hasSpawner) return runInSpawner(iso.namespace, inv);
  let child: ChildProcess;
  if (iso.kind === 'session') {
    // Nix's umask for builders; nsenter keeps ours, so set it around the spawn (fork copies it).
    const old = process.umask(0o022);
    try {
      child = spawn(
        nsenter(),
        [
          `--mount=${iso.namespace.mountNamespace}`,
          `--wd=${inv.buildDir}`,
          '--',
          inv.builder,
          ...inv.args,
        ],
        {
          cwd: inv.buildDir,
          env: Object.fromEntries(inv.env),
          stdio: ['ignore', inv.logFd, inv.logFd],
          detached: true,
          argv0: 'nsenter',
        },
      );
    } finally {
      process.umask(old);
    }
  } else {
    const wrapperArgs: string[] = [];
    if (iso.kind === 'overlay') {
      const [real, logical, upper, work, scratch, parent] = overlaySetupArgs(
        iso.realStoreDir,
        iso.logicalStoreDir,
        iso.upperDir,
        iso.workDir,
        iso.scratchDir,
      );
      wrapperArgs.push(
        'overlay',
        real!,
        logical!,
        upper!,
        work!,
        scratch!,
        parent!,
        String(iso.whiteouts.length),
        ...iso.whiteouts,
      );
    } else {
      wrapperArgs.push('none');
    }
    wrapperArgs.push('--');
    for (const [k, v] of inv.env) {
      if (k === '' || k.includes('='))
        throw new StrataError(
          'DRV_INVALID',
          `Cannot pass environment variable '${k}' to the builder: invalid name`,
          { value: k },
        );
      wrapperArgs.push(`${k}=${v}`);
    }
    // env(1) would take a builder containing '=' for one more assignment.
    if (inv.builder.includes('='))
      throw new StrataError(
        'UNSUPPORTED',
        `Cannot run builder '${inv.builder}': its path contains '='`,
        { value: inv.builder },
      );
    wrapperArgs.push(inv.builder, ...inv.args);
    const shArgs = ['-c', WRAPPER, 'strata-builder', ...wrapperArgs];
    const [cmd, argv] =
      iso.kind === 'overlay'
        ? ['unshare', ['--mount', '--propagation', 'private', '/bin/sh', ...shArgs]]
        : ['/bin/sh', shArgs];
    child = spawn(cmd, argv, {
      cwd: inv.buildDir,
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' },
      // The wrapper's own errors come on the stderr pipe; `exec 2>&1` then points the builder's at the log.
      stdio: ['ignore', inv.logFd, 'pipe'],
      detached: true,
    });
  }
  const setupErr: Buffer[] = [];
  child.stderr?.on('data', (c: Buffer) => setupErr.push(c));
  const killGroup = (): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // The group is gone already.
    }
  };
  const onAbort = (): void => killGroup();
  inv.signal?.addEventListener('abort', onAbort);
  try {
    const exit = await new Promise<BuilderExit>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => {
        // Whatever the builder left running in its process group (and thus in the namespace) goes too.
        killGroup();
        resolve({ code, signal });
      });
    });
    const setup = Buffer.concat(setupErr).toString('utf8').trim();
    if (setup !== '') {
      throw new StrataError(
        'BUILD_SETUP_FAILED',
        `Cannot set up the build environment: ${setup.split('\n').slice(-1)[0]}`,
        { value: setup },
      );
    }
    return exit;
  } finally {
    inv.signal?.removeEventListener('abort', onAbort);
  }
}

/** Kills a builder's whole process group (it runs in a session of its own). */
function killGroup(pid: number | undefined): void {
  try {
    if (pid !== undefined) process.kill(-pid, 'SIGKILL');
  } catch {
    // The group is gone already.
  }
}

/** {@link runBuilder} through the namespace's spawner: no fork of this (large) process. */
async function runInSpawner(ns: BuildNamespace, inv: BuilderInvocation): Promise<BuilderExit> {
  const { pid, exit } = ns.spawn({
    cwd: inv.buildDir,
    logPath: inv.logPath,
    argv: [inv.builder, ...inv.args],
    env: inv.env,
  });
  let known: number | undefined;
  void pid.then((p) => {
    known = p;
    if (inv.signal?.aborted) killGroup(p);
  });
  const onAbort = (): void => killGroup(known);
  inv.signal?.addEventListener('abort', onAbort);
  try {
    const result = await exit;
    // Whatever the builder left running in its process group goes too.
    killGroup(known);
    return result;
  } finally {
    inv.signal?.removeEventListener('abort', onAbort);
  }
}
