/**
 * Substitution: fetching what a store lacks from binary caches (or any other stores), as Nix's
 * substitution goals do. Each path comes from the first substituter (by priority) that has it
 * *and* passes the signature policy; its references are substituted first; every NAR is
 * verified by the target before the path becomes valid. Builds (src/build) and `strata env`
 * call {@link substitutePaths} for the paths no layer has.
 */
import type { StorePath } from '../core/store-path.js';
import { AHEAD_BYTES, addTempRoots, type CopyProgress, copyItems, type CopyItem } from './copy.js';
import type { Store } from './store.js';
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

function priorityOf(s: Store): number {
  const p = (s as Partial<{ priority: number }>).priority;
  return typeof p === 'number' ? p : 50;
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
  const found = new Map<string, CopyItem>();
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
            found.set(p.baseName, { info, source: s });
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
  const substituted = await copyItems(target, [...found.values()], options);
  return { substituted, missing, reasons };
}
