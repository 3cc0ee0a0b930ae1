/**
 * Rootless layered stores. Mounting an overlay needs root, but the kernel allows overlayfs inside
 * a user + mount namespace (Linux ≥ 5.11), where an ordinary user is root. So a non-root `strata`
 * that works on a layered store re-runs itself inside `unshare --user --map-root-user --mount`;
 * the mount then lives as long as that process (and the shell of `strata shell`). Where user
 * namespaces are off, the mount code falls back to fuse-overlayfs.
 */
import { spawnSync } from 'node:child_process';

import { storeOf } from './global.js';

const LAYERED_COMMANDS = new Set(['init', 'mount', 'umount', 'remount', 'layers', 'fsck']);

/**
 * The store URI the command line names, as main.ts would resolve it. Only strata's own options
 * count: what follows a `--` (the command of `strata shell SPEC -- CMD…`, which main.ts puts
 * there when the user did not) is not strata's.
 */
function storeFromArgv(argv: string[]): string {
  const end = argv.indexOf('--');
  const own = end < 0 ? argv : argv.slice(0, end);
  const i = own.findIndex((a) => a === '--store' || a.startsWith('--store='));
  if (i >= 0) return own[i]!.includes('=') ? own[i]!.slice('--store='.length) : (own[i + 1] ?? '');
  return storeOf(undefined);
}

/**
 * Whether this invocation needs the namespace: a non-root user on a layered store, or running
 * one of the commands that make or mount one. `argv` as commander will read it, `command` the
 * command's name.
 */
export function needsUserNamespace(argv: string[], command: string | undefined): boolean {
  if (process.getuid?.() === 0 || process.env['STRATA_USERNS'] === '1') return false;
  const store = storeFromArgv(argv);
  return store.startsWith('layered://') || store.startsWith('local-overlay://') || (command !== undefined && LAYERED_COMMANDS.has(command));
}

/** Re-runs this command inside a user + mount namespace; returns its exit code, or undefined if unavailable. */
export function runInUserNamespace(argv: string[]): number | undefined {
  const probe = spawnSync('unshare', ['--user', '--map-root-user', '--mount', 'true']);
  if (probe.status !== 0) return undefined;
  const r = spawnSync('unshare', ['--user', '--map-root-user', '--mount', '--propagation', 'private', process.execPath, ...process.execArgv, ...argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, STRATA_USERNS: '1', STRATA_MOUNT_MODE: 'user-namespace' },
  });
  return r.status ?? 1;
}
