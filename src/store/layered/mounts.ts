/**
 * The overlayfs mount of a layered store: making it, checking it, remounting it. Mounts are
 * made with util-linux `mount` (no npm package needed) and the source name `overlay`, which is
 * what real Nix's mount check looks for.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

import { StrataError } from '../../core/error.js';

export interface OverlayLayout {
  /** Lower store dirs, highest priority first (overlayfs stacks the first on top). */
  lowerDirs: string[];
  upperDir: string;
  workDir: string;
  /** Where the merged view is mounted: the store's real store dir. */
  mergedDir: string;
}

export interface MountEntry {
  source: string;
  target: string;
  fsType: string;
  options: Map<string, string>;
  /** The raw options field, still escaped as the kernel printed it. */
  rawOptions: string;
}

/** Undoes the kernel's octal escapes in /proc/self/mounts (`\040` space, `\011`, `\012`, `\134`). */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses /proc/self/mounts (or the given text). */
export function readMounts(text: string = readFileSync('/proc/self/mounts', 'utf8')): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 4) continue;
    const rawOptions = fields[3]!;
    const options = new Map<string, string>();
    // Overlay options may contain escaped commas ("\,"); split only on unescaped ones.
    for (const opt of rawOptions.split(/(?<!\\),/)) {
      const eq = opt.indexOf('=');
      options.set(eq < 0 ? opt : opt.slice(0, eq), eq < 0 ? '' : unescapeMountField(opt.slice(eq + 1)));
    }
    entries.push({ source: unescapeMountField(fields[0]!), target: unescapeMountField(fields[1]!), fsType: fields[2]!, options, rawOptions });
  }
  return entries;
}

/** The topmost overlay mounted at `mergedDir`, if any (stacked mounts: the last line wins). */
export function findOverlayMount(mergedDir: string, mounts: MountEntry[] = readMounts()): MountEntry | undefined {
  return mounts.filter((m) => (m.fsType === 'overlay' || m.fsType === FUSE_TYPE) && m.target === mergedDir).at(-1);
}

const FUSE_TYPE = 'fuse.fuse-overlayfs';

/**
 * How this process mounts: as root (kernel overlayfs), inside a user namespace (kernel overlayfs,
 * the mount lives with the process), or with fuse-overlayfs (unprivileged, FUSE).
 */
export function mountMode(): 'root' | 'user-namespace' | 'fuse-overlayfs' {
  if (process.env['STRATA_MOUNT_MODE'] === 'user-namespace') return 'user-namespace';
  return process.getuid?.() === 0 ? 'root' : 'fuse-overlayfs';
}

/** Splits an overlay `lowerdir` value on unescaped colons. */
export function splitLowerDirs(value: string): string[] {
  return value.split(/(?<!\\):/).map((d) => d.replace(/\\(.)/g, '$1'));
}

/** Why the mount at `layout.mergedDir` is not the expected one; undefined when it is. */
export function mountProblem(layout: OverlayLayout, mounts: MountEntry[] = readMounts()): string | undefined {
  const m = findOverlayMount(layout.mergedDir, mounts);
  if (!m) return 'it is not mounted';
  // fuse-overlayfs does not show its layers in /proc/self/mounts: trust our own mount.
  if (m.fsType === FUSE_TYPE) return undefined;
  if (m.source !== 'overlay') return `its source is '${m.source}', not 'overlay'`;
  const lowers = splitLowerDirs(m.options.get('lowerdir') ?? '');
  if (lowers.join('\0') !== layout.lowerDirs.join('\0')) return `its lower dirs are '${lowers.join(':')}', expected '${layout.lowerDirs.join(':')}'`;
  if ((m.options.get('upperdir') ?? '').replace(/\\(.)/g, '$1') !== layout.upperDir) return `its upper dir is '${m.options.get('upperdir')}', expected '${layout.upperDir}'`;
  return undefined;
}

/** Escapes a path for an overlayfs option value: `\`, `,` and `:` are special there. */
function escapeOverlayPath(p: string): string {
  return p.replace(/([\\,:])/g, '\\$1');
}

function runMount(args: string[], what: string, value: string): void {
  // The legacy mount(2) path: util-linux's new mount API cannot remount overlays (Nix sets the same).
  const r = spawnSync('mount', args, { env: { ...process.env, LIBMOUNT_FORCE_MOUNT2: 'always' }, encoding: 'utf8' });
  if (r.status !== 0) {
    const why = (r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n').at(-1);
    throw new StrataError('MOUNT_FAILED', `Cannot ${what} '${value}': ${why}`, { value, hint: process.getuid?.() === 0 ? undefined : 'mounting needs root, or a user and mount namespace' });
  }
}

/** Mounts the overlay (source name `overlay`). */
export function mountOverlay(layout: OverlayLayout): void {
  if (layout.lowerDirs.length === 0) throw new StrataError('MOUNT_FAILED', `Cannot mount '${layout.mergedDir}': a layered store needs at least one local lower`, { value: layout.mergedDir });
  const opts = [`lowerdir=${layout.lowerDirs.map(escapeOverlayPath).join(':')}`, `upperdir=${escapeOverlayPath(layout.upperDir)}`, `workdir=${escapeOverlayPath(layout.workDir)}`];
  if (mountMode() === 'fuse-overlayfs') {
    const r = spawnSync('fuse-overlayfs', ['-o', opts.join(','), layout.mergedDir], { encoding: 'utf8' });
    if (r.status !== 0) {
      throw new StrataError('MOUNT_FAILED', `Cannot mount '${layout.mergedDir}' with fuse-overlayfs: ${(r.stderr || r.error?.message || '').trim()}`, { value: layout.mergedDir, hint: 'run as root, enable user namespaces, or install fuse-overlayfs' });
    }
    return;
  }
  runMount(['-t', 'overlay', 'overlay', '-o', opts.join(','), layout.mergedDir], 'mount overlay at', layout.mergedDir);
}

/**
 * Unmounts. A busy mount (a shell still inside it) is detached lazily: its users keep their view
 * until they leave, new users get the new mount.
 */
export function unmountOverlay(mergedDir: string): void {
  const fuse = findOverlayMount(mergedDir)?.fsType === FUSE_TYPE;
  const r = fuse ? spawnSync('fusermount3', ['-u', mergedDir], { encoding: 'utf8' }) : spawnSync('umount', [mergedDir], { encoding: 'utf8' });
  if (r.status === 0) return;
  if (/busy/i.test(r.stderr)) {
    const lazy = spawnSync('umount', ['--lazy', mergedDir], { encoding: 'utf8' });
    if (lazy.status === 0) return;
  }
  throw new StrataError('MOUNT_FAILED', `Cannot unmount '${mergedDir}': ${(r.stderr || '').trim()}`, { value: mergedDir });
}

/**
 * Resets the overlay's cached dentries after strata deleted straight from the upper dir (which
 * would otherwise surface as "Stale file handle"), and picks up lowers that changed: overlayfs
 * cannot change its layers on `-o remount`, so this unmounts and mounts again.
 */
export function remountOverlay(layout: OverlayLayout): void {
  if (findOverlayMount(layout.mergedDir)) unmountOverlay(layout.mergedDir);
  mountOverlay(layout);
}

/**
 * Real Nix's check for `local-overlay://` stores, reproduced exactly (nix-local-overlay.md §4):
 * the last line starting `overlay <real> ` must have `lowerdir=<lower real>` and
 * `upperdir=<upper-layer>`, each followed by a space or a comma. As in Nix, paths are matched
 * unescaped, so a path with a space never matches.
 */
export function nixMountCheck(realStoreDir: string, lowerRealDir: string, upperLayer: string, mountsText: string = readFileSync('/proc/self/mounts', 'utf8')): void {
  const lines = mountsText.split('\n').filter((l) => l.startsWith(`overlay ${realStoreDir} `));
  const line = lines.at(-1);
  const has = (key: string, value: string) => line !== undefined && new RegExp(`\\b${key}=${escapeRegExp(value)}[ ,]`).test(line);
  if (!line || !has('lowerdir', lowerRealDir) || !has('upperdir', upperLayer)) {
    throw new StrataError('MOUNT_INCORRECT', `overlay filesystem '${realStoreDir}' mounted incorrectly`, { value: realStoreDir, hint: `mount -t overlay overlay -o lowerdir=${lowerRealDir},upperdir=${upperLayer},workdir=… ${realStoreDir}` });
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
