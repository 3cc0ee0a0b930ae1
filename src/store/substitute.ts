/**
 * Substitution: fetching what a store lacks from binary caches (or any other stores), as Nix's
 * substitution goals do. Each path comes from the first substituter (by priority) that has it
 * *and* passes the signature policy, or the next such one when fetching its NAR from that one
 * fails; its references are substituted first; every NAR is verified by the target before the
 * path becomes valid. Builds (src/build) and `strata env`
 * call {@link substitutePaths} for the paths no layer has.
 */
import type { StorePath, StoreDir } from '../core/store-path.js';
import type { TrustedKeys } from '../core/signature.js';
import { topoSortInfos } from './closure.js';
import { AHEAD_BYTES, addTempRoots, type CopyProgress, copyItems, type CopyItem } from './copy.js';
import type { PathInfo, Store } from './store.js';
import { acceptable, type TrustPolicy, trustedKeysOf } from './trust.js';

/** What {@link substitutePaths} did. */
export interface SubstituteResult {
  /** Paths now valid in the target that were not before, references first. */
  substituted: StorePath[];
  /** Paths no substituter could provide (including paths whose references could not be). */
  missing: StorePath[];
  /** Why each missing path was not substituted (by base name). */
  reasons: Map<string, string>;
}

/** Options for {@link substitutePaths}. */
export interface SubstituteOptions {
  concurrency?: number | undefined;
  onProgress?: ((p: CopyProgress) => void) | undefined;
}

/** A substituter's priority, lower first; 0 when it has none, as Nix's store setting defaults. */
function priorityOf(s: Store): number {
  const p = (s as Partial<{ priority: number }>).priority;
  return typeof p === 'number' ? p : 0;
}

/**
 * Makes `paths` and their closures valid in `target` by fetching from `substituters`. Paths the
 * target already has are left alone. Returns the substituted and the missing paths; it throws
 * only when a fetch or a verification fails (a corrupt NAR, a transport error mid-way).
 *
 * @example
 * ```ts
 * const r = await substitutePaths(store, [cache], [out], { trustedPublicKeys: ['cache-1:…'] });
 * if (r.missing.length > 0) build(...);
 * ```
 */
export async function substitutePaths(target: Store, substituters: Store[], paths: StorePath[], trust: TrustPolicy, options: SubstituteOptions = {}): Promise<SubstituteResult> {
  const subs = [...substituters].sort((a, b) => priorityOf(a) - priorityOf(b));

  for (const s of subs) await s.prefetchClosure?.(paths).catch(() => {});
  // The first substituter is the one paths are taken from when it has them: its NARs the target
  // lacks are downloaded while the walk below goes on (see copyPaths).
  const stopAhead = subs[0]?.prefetchNars?.(async (p) => !(await target.isValidPath(p)), AHEAD_BYTES);
  try {
    return await substituteFrom(target, subs, paths, trust, options);
  } finally {
    stopAhead?.();
  }
}

async function substituteFrom(target: Store, subs: Store[], paths: StorePath[], trust: TrustPolicy, options: SubstituteOptions): Promise<SubstituteResult> {
  const keys = trustedKeysOf(trust);
  const requireSigs = trust.requireSigs !== false;
  const found = new Map<string, Candidate>();
  const reasons = new Map<string, string>();
  const seen = new Set<string>();
  const missing: StorePath[] = [];
  let frontier = paths;
  while (frontier.length > 0) {
    const fresh = frontier.filter((p) => !seen.has(p.baseName) && (seen.add(p.baseName), true));
    await addTempRoots(target, fresh); // What is found valid must stay so while its referrers arrive.
    const valid = new Set((await target.queryValidPaths(fresh)).map((p) => p.baseName));
    const next: StorePath[] = [];
    await Promise.all(
      fresh
        .filter((p) => !valid.has(p.baseName))
        .map(async (p) => {
          const why: string[] = [];
          for (const s of subs) {
            let info;
            try {
              info = await s.queryPathInfo(p);
            } catch (e) {
              why.push(`${s.uri}: ${(e as Error).message}`);
              continue;
            }
            if (!info) continue;
            if (!acceptable(target.storeDir, info, keys, requireSigs)) {
              why.push(`${s.uri}: not signed by any of the keys in 'trusted-public-keys'`);
              continue;
            }
            found.set(p.baseName, { info, source: s, rank: subs.indexOf(s) });
            for (const r of info.references) if (!r.equals(p)) next.push(r);
            return;
          }
          missing.push(p);
          reasons.set(p.baseName, why.length > 0 ? why.join('; ') : 'no substituter has it');
        }),
    );
    frontier = next;
  }

  // A path whose closure is incomplete cannot become valid: drop it and its referrers.
  const blocked = new Set(missing.map((p) => p.baseName));
  let changed = true;
  while (changed) {
    changed = false;
    for (const [name, item] of found) {
      const bad = item.info.references.find((r) => blocked.has(r.baseName));
      if (!bad) continue;
      blocked.add(name);
      found.delete(name);
      missing.push(item.info.path);
      reasons.set(name, `its reference '${target.storeDir.print(bad)}' cannot be substituted`);
      changed = true;
    }
  }
  const substituted = await copyFalling(target, subs, [...found.values()], keys, requireSigs, options);
  return { substituted, missing, reasons };
}

/** A path to substitute, from `subs[rank]`. */
interface Candidate extends CopyItem {
  rank: number;
}

/**
 * Copies `items`; when reading a path's NAR from its substituter fails (unreachable, corrupt,
 * not the declared bytes), what was added stays and the path is taken from the next substituter
 * that has it acceptably with the same references, as Nix's substitution goal tries the next
 * substituter. With none left, the path is read once more from its own, then the failure is
 * thrown. Returns the paths added, references first.
 */
async function copyFalling(target: Store, subs: Store[], items: Candidate[], keys: TrustedKeys, requireSigs: boolean, options: SubstituteOptions): Promise<StorePath[]> {
  const added: PathInfo[] = [];
  const again = new Set<string>();
  let pending = items;
  for (;;) {
    const failed = new Set<string>();
    try {
      const copied = new Set((await copyItems(target, pending, { ...options, onSourceError: (info) => failed.add(info.path.baseName) })).map((p) => p.baseName));
      added.push(...pending.filter((i) => copied.has(i.info.path.baseName)).map((i) => i.info));
      return topoSortInfos(added).map((i) => i.path);
    } catch (e) {
      if (failed.size === 0) throw e;
      const valid = new Set((await target.queryValidPaths(pending.map((i) => i.info.path))).map((p) => p.baseName));
      const next: Candidate[] = [];
      for (const item of pending) {
        const name = item.info.path.baseName;
        if (valid.has(name)) added.push(item.info);
        else if (!failed.has(name)) next.push(item);
        else {
          const other = await nextCandidate(target.storeDir, subs, item, keys, requireSigs);
          if (other) next.push(other);
          // With no other substituter, once more from its own: a NAR fetched in one answer with
          // a bad one (strata serve's nars/) fails with it, though its own bytes may be fine.
          else if (!again.has(name)) {
            again.add(name);
            next.push(item);
          } else throw e;
        }
      }
      pending = next;
    }
  }
}

/** The next substituter after `item`'s that has its path acceptably, with the same references. */
async function nextCandidate(storeDir: StoreDir, subs: Store[], item: Candidate, keys: TrustedKeys, requireSigs: boolean): Promise<Candidate | undefined> {
  const refs = (i: PathInfo) => i.references.map((r) => r.baseName).sort().join(' ');
  for (let rank = item.rank + 1; rank < subs.length; rank++) {
    const info = await subs[rank]!.queryPathInfo(item.info.path).catch(() => undefined);
    if (info && acceptable(storeDir, info, keys, requireSigs) && refs(info) === refs(item.info)) return { info, source: subs[rank]!, rank };
  }
  return undefined;
}
