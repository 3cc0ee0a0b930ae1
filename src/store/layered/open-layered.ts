/**
 * Opening the two kinds of layered store:
 * - `layered:///dir`, strata's own (made by `strata init`): many lowers, managed mounts, lower
 *   generations noticed and picked up by a safe remount;
 * - `local-overlay://?…`, real Nix's, with its parameters, defaults and mount check.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { StrataError } from '../../core/error.js';
import { lexists } from '../../fs/exists.js';
import { localStoreConfig, localStoreConfigOf } from '../local/config.js';
import { closeFd, lockFdSync, openLockFile } from '../local/flock.js';
import { LocalStore } from '../local/local-store.js';
import { boolParam, parseStoreUri } from '../uri.js';
import { layeredPaths, localLowerRoot, lowerGeneration, type LowerConfig, readLayeredConfig, writeLayeredConfig } from './config.js';
import { LayeredStore, type Lower, lowerCopyMatches, overlayLowerOf } from './layered-store.js';
import { findOverlayMount, mountOverlay, mountProblem, nixMountCheck, type OverlayLayout, remountOverlay, unmountOverlay } from './mounts.js';

/** Opens a lower: local stores read-only (no lock, no write), caches as they are. */
async function openLower(lc: LowerConfig): Promise<Lower> {
  const { openStore } = await import('../open.js');
  const parsed = parseStoreUri(lc.uri);
  if (parsed.scheme === 'local') {
    const uri = parsed.params.has('read-only') ? lc.uri : `${lc.uri}${lc.uri.includes('?') ? '&' : '?'}read-only=true`;
    const store = (await openStore(uri)) as LocalStore;
    return { name: lc.name, store, realStoreDir: store.realStoreDir };
  }
  if (parsed.scheme === 'layered' || parsed.scheme === 'local-overlay') {
    throw new StrataError('URI_INVALID', `Cannot use '${lc.uri}' as a lower: stack its lowers directly instead`, { value: lc.uri });
  }
  return { name: lc.name, store: await openStore(lc.uri) };
}

/** The overlay layout of a layered dir and its local lowers. */
function layoutOf(dir: string, lowers: Lower[]): OverlayLayout {
  const p = layeredPaths(dir);
  return { lowerDirs: lowers.flatMap((l) => (l.realStoreDir ? [l.realStoreDir] : [])), upperDir: p.upper, workDir: p.work, mergedDir: p.merged };
}

export interface MountState {
  layout: OverlayLayout;
  /** What was done to make the mount right: nothing, mounted, or remounted (and why). */
  action: 'none' | 'mounted' | 'remounted';
  reason?: string | undefined;
  /** Paths the upper needed that a new lower generation dropped, copied into the upper first. */
  rescued: string[];
  /** Such paths that could not be rescued (not visible in the old mount either). */
  lost: string[];
}

/**
 * Makes sure the overlay of a layered dir is mounted with the current lowers. When a lower
 * changed generation (a new big disk), the paths the upper DB relies on that the new generation
 * lacks are first copied out of the old mount (still showing the old generation), moved into the
 * upper layer while unmounted, and only then is the new stack mounted: no upper data is lost.
 */
export async function ensureMounted(dir: string, lowers: Lower[], upper: LocalStore, options: { force?: boolean } = {}): Promise<MountState> {
  const lock = takeMountLock(dir);
  try {
    return await ensureMountedLocked(dir, lowers, upper, options);
  } finally {
    closeFd(lock);
  }
}

/**
 * One process at a time checks and changes the mount of a layered dir: two that both saw a new
 * generation would otherwise both unmount and mount, leaving two overlays stacked on one upper
 * dir (undefined behaviour in overlayfs). Held until the returned descriptor is closed.
 */
function takeMountLock(dir: string): number {
  const fd = openLockFile(join(layeredPaths(dir).state, 'strata-mount.lock'));
  try {
    lockFdSync(fd, 'exclusive');
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  return fd;
}

async function ensureMountedLocked(dir: string, lowers: Lower[], upper: LocalStore, options: { force?: boolean }): Promise<MountState> {
  const config = readLayeredConfig(dir);
  const layout = layoutOf(dir, lowers);
  const p = layeredPaths(dir);
  const changed: string[] = [];
  for (const lc of config.lowers) {
    const root = localLowerRoot(lc.uri);
    if (root === undefined) continue;
    const gen = lowerGeneration(root);
    if (gen !== lc.generation) {
      changed.push(`${lc.name} is now generation ${gen} (was ${lc.generation ?? 'unknown'})`);
      lc.generation = gen;
    }
  }
  const problem = mountProblem(layout);
  const rescueDir = join(dir, 'rescue');
  const state: MountState = { layout, action: 'none', rescued: [], lost: [] };
  if (problem === 'it is not mounted' && existsSync(rescueDir)) {
    // A switch killed after unmounting: its rescued copies are complete (`rescueDropped`), and
    // the old generation they came from is gone: they go into the upper now, or never.
    for (const name of completeRescues(rescueDir)) {
      if (!lexists(join(p.upper, name))) renameSync(join(rescueDir, name), join(p.upper, name));
      state.rescued.push(`${upper.storeDir.path}/${name}`);
    }
    rmSync(rescueDir, { recursive: true, force: true });
  }
  const owed = existsSync(p.remountMarker) ? 'a deletion from the upper layer was not followed by a remount' : undefined;
  if (problem === 'it is not mounted') {
    mountOverlay(layout);
    state.action = 'mounted';
  } else if (problem !== undefined || changed.length > 0 || owed !== undefined || options.force) {
    const moves = await rescueDropped(upper, lowers, p.upper, rescueDir, state);
    unmountOverlay(layout.mergedDir);
    for (const name of moves) renameSync(join(rescueDir, name), join(p.upper, name));
    rmSync(rescueDir, { recursive: true, force: true });
    mountOverlay(layout);
    state.action = 'remounted';
    state.reason = problem ?? (changed.length > 0 ? changed.join('; ') : (owed ?? 'asked for'));
  }
  // Any fresh mount has fresh dentries: nothing is owed any more.
  if (state.action !== 'none') rmSync(p.remountMarker, { force: true });
  if (changed.length > 0) writeLayeredConfig(dir, config);
  return state;
}

/** Names of the finished copies in a rescue dir (a copy is made as `.part-NAME`, then renamed). */
function completeRescues(rescueDir: string): string[] {
  return readdirSync(rescueDir).filter((n) => !n.startsWith('.part-'));
}

/**
 * Copies out of the old mount the upper DB's paths that no (new) layer holds any more. Each copy
 * is made under a temporary name and renamed when whole, so a switch killed meanwhile leaves
 * either finished copies (used as they are next time) or parts (made again).
 */
async function rescueDropped(upper: LocalStore, lowers: Lower[], upperDir: string, rescueDir: string, state: MountState): Promise<string[]> {
  const moves: string[] = [];
  const upperNames = new Set(readdirSync(upperDir));
  const done = new Set(existsSync(rescueDir) ? completeRescues(rescueDir) : []);
  for (const path of await upper.queryAllValidPaths()) {
    if (upperNames.has(path.baseName)) continue;
    // Held when the new top lower of the overlay has the same bytes as the upper row says: a
    // rebuilt path (same name, other bytes) or one only a binary-cache lower has needs its copy.
    // (The upper row is read only when a lower shows the path: this runs on every remount.)
    const shown = overlayLowerOf(lowers, path);
    if (shown && (await lowerCopyMatches(upper, shown, path)) === true) continue;
    const old = upper.realPath(path);
    if (!done.has(path.baseName)) {
      if (!existsSync(old)) {
        state.lost.push(upper.storeDir.print(path));
        continue;
      }
      mkdirSync(rescueDir, { recursive: true });
      const part = join(rescueDir, `.part-${path.baseName}`);
      rmSync(part, { recursive: true, force: true });
      const r = spawnSync('cp', ['-a', old, part]);
      if (r.status !== 0) {
        state.lost.push(upper.storeDir.print(path));
        continue;
      }
      renameSync(part, join(rescueDir, path.baseName));
    }
    moves.push(path.baseName);
    state.rescued.push(upper.storeDir.print(path));
  }
  return moves;
}

/** Opens `layered:///dir`, mounting it if needed. */
export async function openLayered(uri: string, dir: string, options: { mount?: boolean; onMount?: (state: MountState) => void } = {}): Promise<LayeredStore> {
  const config = readLayeredConfig(dir);
  const p = layeredPaths(dir);
  // `?read-only=true`: the upper DB opened read-only, and the mount left as it is.
  const readOnly = boolParam(uri, parseStoreUri(uri).params, 'read-only', false);
  const lowers: Lower[] = [];
  let upper: LocalStore | undefined;
  try {
    for (const lc of config.lowers) lowers.push(await openLower(lc));
    if (!readOnly) for (const d of [p.upper, p.work, p.merged]) mkdirSync(d, { recursive: true });
    upper = await LocalStore.open(uri, localStoreConfig({ root: dir, readOnly }));
    if (options.mount ?? !readOnly) {
      const state = await ensureMounted(dir, lowers, upper);
      options.onMount?.(state);
    }
    const layout = layoutOf(dir, lowers);
    const remount = () => {
      const lock = takeMountLock(dir);
      try {
        remountOverlay(layout);
      } finally {
        closeFd(lock);
      }
    };
    return new LayeredStore(uri, upper, lowers, { upperLayer: p.upper, remount, remountMarker: p.remountMarker, substituters: config.substituters, trustedPublicKeys: config.trustedPublicKeys });
  } catch (e) {
    await upper?.close();
    for (const l of lowers) await l.store.close();
    throw e;
  }
}

/** `strata init DIR --lower URI…`: lays out a layered store, writes strata.json, mounts it. */
export async function initLayered(dir: string, lowerUris: string[], extra: { trustedPublicKeys?: string[]; substituters?: string[] } = {}): Promise<LayeredStore> {
  const p = layeredPaths(dir);
  if (existsSync(p.config)) {
    throw new StrataError('LAYERED_EXISTS', `Cannot initialise '${dir}': it already holds a layered store`, { value: dir });
  }
  if (lowerUris.length === 0) throw new StrataError('URI_INVALID', `Cannot initialise '${dir}': give at least one --lower`, { value: dir });
  const lowers: LowerConfig[] = lowerUris.map((uri, i) => {
    parseStoreUri(uri);
    return { uri, name: `lower${i}` };
  });
  // Open each lower once now, so a bad URI fails before anything is written.
  const opened: Lower[] = [];
  try {
    for (const lc of lowers) opened.push(await openLower(lc));
  } finally {
    for (const l of opened) await l.store.close();
  }
  if (!opened.some((l) => l.realStoreDir)) {
    throw new StrataError('URI_INVALID', `Cannot initialise '${dir}': at least one lower must be a local store (the overlay needs a lower dir)`, { value: dir });
  }
  // overlayfs refuses a lower dir stacked twice ("conflicting lowerdir path"): say which, up front.
  const seen = new Map<string, string>();
  for (const l of opened) {
    if (!l.realStoreDir) continue;
    const first = seen.get(l.realStoreDir);
    if (first !== undefined) throw new StrataError('URI_INVALID', `Cannot initialise '${dir}': lowers '${first}' and '${l.name}' are the same store ('${l.realStoreDir}')`, { value: l.realStoreDir });
    seen.set(l.realStoreDir, l.name);
  }
  // What init creates, removed again if it fails (a mount the kernel refuses): no half-made store.
  const made = [dir, join(dir, 'nix'), p.upper, p.work].filter((d) => !existsSync(d));
  try {
    for (const d of [p.upper, p.work, p.merged, p.state]) mkdirSync(d, { recursive: true });
    writeLayeredConfig(dir, { version: 1, lowers, trustedPublicKeys: extra.trustedPublicKeys ?? [], substituters: extra.substituters ?? [] });
    return await openLayered(`layered://${dir}`, dir);
  } catch (e) {
    if (!isMounted(dir)) {
      rmSync(p.config, { force: true });
      for (const d of made.reverse()) rmSync(d, { recursive: true, force: true });
    }
    throw e;
  }
}

/** Opens real Nix's `local-overlay://` store with Nix's parameters and mount check. */
export async function openLocalOverlay(uri: string): Promise<LayeredStore> {
  const parsed = parseStoreUri(uri);
  const params = parsed.params;
  const root = params.get('root') ?? (parsed.scheme === 'local-overlay' ? parsed.root : undefined);
  const upperSetting = params.get('upper-layer');
  if (!upperSetting) {
    throw new StrataError('URI_INVALID', `Cannot open '${uri}': overlay store requires the 'upper-layer' setting`, { value: uri });
  }
  // A path setting, canonicalised as Nix does (`.`, `..`, `//`, a trailing `/`; symlinks kept).
  const upperLayer = resolve(upperSetting);
  const { openStore } = await import('../open.js');
  const lowerUri = params.get('lower-store') || 'local';
  const lowerStore = await openStore(lowerUri);
  if (!(lowerStore instanceof LocalStore)) {
    await lowerStore.close();
    throw new StrataError('URI_INVALID', `Cannot open '${uri}': lower store '${lowerUri}' has no store dir on this machine`, { value: lowerUri });
  }
  try {
    const config = localStoreConfigOf(uri, { root, params });
    if (boolParam(uri, params, 'check-mount', true)) nixMountCheck(config.realStoreDir, lowerStore.realStoreDir, upperLayer);
    const upper = await LocalStore.open(uri, config);
    const hook = params.get('remount-hook');
    const remount = () => {
      if (!hook) {
        process.stderr.write(`warning: '${config.realStoreDir}' needs remounting, set remount-hook to do that automatically\n`);
        return;
      }
      const r = spawnSync(hook, [config.realStoreDir], { stdio: 'inherit' });
      if (r.status !== 0) throw new StrataError('REMOUNT_FAILED', `Cannot remount '${config.realStoreDir}': remount hook '${hook}' exited ${r.status}`, { value: hook });
    };
    return new LayeredStore(uri, upper, [{ name: 'lower', store: lowerStore, realStoreDir: lowerStore.realStoreDir }], { upperLayer, remount });
  } catch (e) {
    await lowerStore.close();
    throw e;
  }
}

/** Is the layered dir currently mounted (for `strata layers` and `umount`)? */
export function isMounted(dir: string): boolean {
  return findOverlayMount(layeredPaths(dir).merged) !== undefined;
}

