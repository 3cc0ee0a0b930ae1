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
    if (missing) throw notValid(store, missing);
    return closure;
  }
  const seen = new Map<string, PathInfo>();
  let frontier = paths;
  while (frontier.length > 0) {
    const next: StorePath[] = [];
    // Ask for one level at a time; backends with latency (HTTP) get many requests in flight.
    const infos = await Promise.all(frontier.map(async (p) => [p, await store.queryPathInfo(p)] as const));
    for (const [p, info] of infos) {
      if (!info) throw notValid(store, p);
      if (seen.has(p.baseName)) continue;
      seen.set(p.baseName, info);
      for (const r of info.references) if (!seen.has(r.baseName)) next.push(r);
    }
    frontier = [...new Map(next.map((p) => [p.baseName, p])).values()].filter((p) => !seen.has(p.baseName));
  }
  return seen;
}

function notValid(store: Store, p: StorePath): StrataError {
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
