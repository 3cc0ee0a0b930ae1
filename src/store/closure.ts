/**
 * Closures over the Store contract: written once here, so every backend (local, cache, layered)
 * answers `-r`, `--requisites` and `--closure-size` the same way.
 */
import { StrataError } from '../core/error.js';
import type { StorePath } from '../core/store-path.js';
import type { PathInfo, Store } from './store.js';

/** The closure of `paths` under references, as path infos; invalid start paths throw. */
export async function computeClosure(store: Store, paths: StorePath[]): Promise<Map<string, PathInfo>> {
  if (store.queryClosure) {
    const closure = new Map((await store.queryClosure(paths)).map((i) => [i.path.baseName, i]));
    const missing = paths.find((p) => !closure.has(p.baseName));
    if (missing) throw closureMemberNotValid(store, missing);
    return closure;
  }
  const seen = new Map<string, PathInfo>();
  let frontier = paths;
  while (frontier.length > 0) {
    const next: StorePath[] = [];
    // Ask for one level at a time; backends with latency (HTTP) get many requests in flight.
    const infos = await Promise.all(frontier.map(async (p) => [p, await store.queryPathInfo(p)] as const));
    for (const [p, info] of infos) {
      if (!info) throw closureMemberNotValid(store, p);
      if (seen.has(p.baseName)) continue;
      seen.set(p.baseName, info);
      for (const r of info.references) if (!seen.has(r.baseName)) next.push(r);
    }
    frontier = [...new Map(next.map((p) => [p.baseName, p])).values()].filter((p) => !seen.has(p.baseName));
  }
  return seen;
}

/** The error for a closure member (or start path) `store` does not have. */
export function closureMemberNotValid(store: Store, p: StorePath): StrataError {
  return new StrataError('PATH_NOT_VALID', `Cannot compute the closure of '${store.storeDir.print(p)}': it is not valid in '${store.uri}'`, { value: store.storeDir.print(p) });
}

/** Orders path infos so that references come before their referrers (self-references ignored), in the order Nix's topoSortPaths gives reversed. */
export function topoSortInfos<T extends Pick<PathInfo, 'path' | 'references'>>(infos: Iterable<T>): T[] {
  const byName = new Map([...infos].map((i) => [i.path.baseName, i]));
  const out: T[] = [];
  const done = new Set<string>();
  const visit = (name: string): void => {
    if (done.has(name)) return;
    done.add(name);
    const info = byName.get(name)!;
    // References in name order, as Nix walks its sorted sets: `nix-store -q` prints this order.
    for (const r of info.references.map((x) => x.baseName).sort()) if (r !== name && byName.has(r)) visit(r);
    out.push(info);
  };
  for (const name of [...byName.keys()].sort()) visit(name);
  return out;
}

/**
 * Members beyond this many are summed one closure walk each (see {@link closureTotals}): the
 * bitsets take n²/8 bytes, 32 MiB at 16,384.
 */
const BITSET_MEMBERS = 16_384;

/**
 * For `infos`, a set closed under references, the totals of `weigh` over each member's closure
 * (the member included), by base name: what `nix path-info -S` and `exportReferencesGraph`'s
 * `closureSize` report. Each member's closure is a bitset, the union of its references' (taken
 * references first), so there is one pass and no closure walk per member, which made
 * `strata path-info -r -S` quadratic in walks: 0.13 s more than `-r` alone for a 268-path
 * closure of the 1,000,000-path benchmark store.
 */
export function closureTotals<T extends Pick<PathInfo, 'path' | 'references'>>(infos: Iterable<T>, weigh: (info: T) => number[]): Map<string, number[]> {
  const ordered = topoSortInfos(infos);
  const totals = new Map<string, number[]>();
  const weights = ordered.map(weigh);
  const index = new Map(ordered.map((i, n) => [i.path.baseName, n]));
  if (ordered.length > BITSET_MEMBERS) {
    // A walk per member, over the infos in memory.
    for (const [n, info] of ordered.entries()) {
      const sum = weights[n]!.map(() => 0);
      const seen = new Set([n]);
      for (const todo = [n]; todo.length > 0; ) {
        const m = todo.pop()!;
        weights[m]!.forEach((x, k) => (sum[k]! += x));
        for (const r of ordered[m]!.references) {
          const next = index.get(r.baseName);
          if (next !== undefined && !seen.has(next)) {
            seen.add(next);
            todo.push(next);
          }
        }
      }
      totals.set(info.path.baseName, sum);
    }
    return totals;
  }
  const words = Math.ceil(ordered.length / 32);
  const sets: Uint32Array[] = [];
  for (const [n, info] of ordered.entries()) {
    const set = new Uint32Array(words);
    set[n >>> 5]! |= 1 << (n & 31);
    for (const r of info.references) {
      const m = index.get(r.baseName);
      // References come first: m < n, except for a self-reference (already set).
      if (m !== undefined && m !== n) {
        const other = sets[m]!;
        for (let w = 0; w < words; w++) set[w]! |= other[w]!;
      }
    }
    sets.push(set);
    const sum = weights[n]!.map(() => 0);
    for (let w = 0; w < words; w++) {
      for (let bits = set[w]!; bits !== 0; bits &= bits - 1) {
        const member = (w << 5) + 31 - Math.clz32(bits & -bits);
        weights[member]!.forEach((x, k) => (sum[k]! += x));
      }
    }
    totals.set(info.path.baseName, sum);
  }
  return totals;
}
