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

/** The store URI the command line names, as main.ts would resolve it. */
function storeFromArgv(argv: string[]): string {
  const i = argv.findIndex((a) => a === '--store' || a.startsWith('--store='));
  if (i >= 0) return argv[i]!.includes('=') ? argv[i]!.slice('--store='.length) : (argv[i + 1] ?? '');
  return storeOf(undefined);
}

/** Whether this invocation needs the namespace: a non-root user on a layered store. */
export function needsUserNamespace(argv: string[]): boolean {
  if (process.getuid?.() === 0 || process.env['STRATA_USERNS'] === '1') return false;
  const store = storeFromArgv(argv);
  return store.startsWith('layered://') || store.startsWith('local-overlay://') || argv.some((a) => LAYERED_COMMANDS.has(a));
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
