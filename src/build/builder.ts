/**
 * Spawning a builder. With isolation (root), every build gets its own mount namespace
 * (`unshare --mount --propagation private`) in which the store is visible at its logical path:
 *
 *   /nix/store = overlay(lower = the real store dir, upper = a fresh per-build scratch dir)
 *
 * Why an overlay: outputs may be files or directories and do not exist before the build, so
 * nothing can be bind-mounted at them in advance. With the overlay the builder can create its
 * outputs (and, to its surprise, anything else) while the real store stays untouched: every
 * write lands in the upper dir, where register-outputs.ts finds the outputs and refuses any other
 * entry ("builder wrote outside $out"). A failed build leaves nothing behind but the scratch dir.
 * Output paths that already exist below (a stale leftover, or an output already valid in a
 * partially built multi-output derivation) are hidden by whiteouts, so the builder starts from an
 * empty `$out` as in Nix. When the store is rooted elsewhere (a chroot store), its real path is
 * also re-mounted read-only inside the namespace.
 *
 * The derivation environment is handed over with `env -i`, not through the shell: dash drops
 * variables whose names are not shell identifiers (`env -i a-b=1 sh -c env` prints nothing),
 * and derivation env names are arbitrary.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';

import { StrataError } from '../core/error.js';
import type { BuildLog } from './logs.js';

/** How the builder is isolated. */
export type Isolation =
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
  log: BuildLog;
  signal?: AbortSignal | undefined;
}

/** How the builder ended. */
export interface BuilderExit {
  /** Exit status, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
}

// $1 mode, then for overlay: real logical upper work scratch mkparent nwhiteouts whiteouts...;
// then `--` and the env assignments, builder and args for `env -i`.
const WRAPPER = `set -e
umask 022
mode=$1; shift
if [ "$mode" = overlay ]; then
  real=$1 logical=$2 upper=$3 work=$4 scratch=$5 parent=$6 n=$7; shift 7
  while [ "$n" -gt 0 ]; do mknod "$upper/$1" c 0 0; shift; n=$((n - 1)); done
  if [ "$parent" != - ]; then
    mount -t tmpfs strata-build "$scratch"
    mkdir "$scratch/u" "$scratch/w"
    mount -t overlay strata-build -o "lowerdir=$parent,upperdir=$scratch/u,workdir=$scratch/w" "$parent"
    mkdir -p "$logical"
  fi
  mount -t overlay strata-build -o "lowerdir=$real,upperdir=$upper,workdir=$work" "$logical"
  if [ "$real" != "$logical" ]; then mount --bind -o ro "$real" "$real"; fi
fi
shift
exec 2>&1
exec env -i "$@"
`;

/** Characters overlayfs would read as option syntax in a lowerdir/upperdir value. */
const OVERLAY_UNSAFE = /[,:\\]/;

/** The deepest existing ancestor of `dir` (itself when it exists). */
function existingAncestor(dir: string): string {
  let d = dir;
  while (!existsSync(d)) d = dirname(d);
  return d;
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
  const wrapperArgs: string[] = [];
  if (iso.kind === 'overlay') {
    for (const [what, p] of [['store dir', iso.realStoreDir], ['build scratch dir', iso.upperDir]] as const) {
      if (OVERLAY_UNSAFE.test(p)) {
        throw new StrataError('BUILD_SETUP_FAILED', `Cannot mount the build overlay on '${p}': the ${what} contains ',', ':' or '\\'`, { value: p });
      }
    }
    const ancestor = existingAncestor(iso.logicalStoreDir);
    let parent = '-';
    if (ancestor !== iso.logicalStoreDir) {
      if (ancestor === '/') {
        throw new StrataError('BUILD_SETUP_FAILED', `Cannot show the store at '${iso.logicalStoreDir}' to builders: no directory on its way exists but '/'`, {
          value: iso.logicalStoreDir,
          hint: `create it once with 'mkdir -p ${iso.logicalStoreDir}'`,
        });
      }
      parent = ancestor;
    }
    wrapperArgs.push('overlay', iso.realStoreDir, iso.logicalStoreDir, iso.upperDir, iso.workDir, iso.scratchDir, parent, String(iso.whiteouts.length), ...iso.whiteouts);
  } else {
    wrapperArgs.push('none');
  }
  wrapperArgs.push('--');
  for (const [k, v] of inv.env) {
    if (k === '' || k.includes('=')) throw new StrataError('DRV_INVALID', `Cannot pass environment variable '${k}' to the builder: invalid name`, { value: k });
    wrapperArgs.push(`${k}=${v}`);
  }
  // env(1) would take a builder containing '=' for one more assignment.
  if (inv.builder.includes('=')) throw new StrataError('UNSUPPORTED', `Cannot run builder '${inv.builder}': its path contains '='`, { value: inv.builder });
  wrapperArgs.push(inv.builder, ...inv.args);

  const shArgs = ['-c', WRAPPER, 'strata-builder', ...wrapperArgs];
  const [cmd, argv] = iso.kind === 'overlay' ? ['unshare', ['--mount', '--propagation', 'private', '/bin/sh', ...shArgs]] : ['/bin/sh', shArgs];
  const child = spawn(cmd, argv, {
    cwd: inv.buildDir,
    env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const setupErr: Buffer[] = [];
  child.stdout!.on('data', (c: Buffer) => inv.log.write(c));
  child.stderr!.on('data', (c: Buffer) => setupErr.push(c));
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
      let result: BuilderExit | undefined;
      child.on('error', reject);
      child.on('exit', (code, signal) => {
        result = { code, signal };
        // Background processes would keep the pipe (and the namespace) alive.
        killGroup();
      });
      child.on('close', () => resolve(result ?? { code: null, signal: null }));
    });
    const setup = Buffer.concat(setupErr).toString('utf8').trim();
    if (setup !== '') {
      throw new StrataError('BUILD_SETUP_FAILED', `Cannot set up the build environment: ${setup.split('\n').slice(-1)[0]}`, { value: setup });
    }
    return exit;
  } finally {
    inv.signal?.removeEventListener('abort', onAbort);
  }
}
