/**
 * `strata query --roots`: the roots (as `link -> path` lines) that keep any of `paths` alive, as
 * `nix-store -q --roots` finds them: roots whose target is in the paths' referrer closure, where
 * (keep-derivations, Nix's default) a `.drv` is also kept alive by its valid outputs.
 */
import { StrataError } from '../core/error.js';
import type { StorePath } from '../core/store-path.js';
import type { Store } from '../store/store.js';

export async function rootsOf(store: Store, paths: StorePath[]): Promise<string[]> {
  const { LocalStore } = await import('../store/local/local-store.js');
  const { LayeredStore } = await import('../store/layered/layered-store.js');
  // A layered store's roots live in its upper state dir, as in Nix's overlay store.
  const local = store instanceof LayeredStore ? store.upper : store;
  if (!(local instanceof LocalStore)) {
    const shown = paths.map((p) => store.storeDir.print(p)).join("', '");
    throw new StrataError('UNSUPPORTED', `Cannot list the roots of '${shown}': '${store.uri}' has no GC roots`, { value: store.uri });
  }
  const keptBy = new Set<string>();
  const todo = [...paths];
  while (todo.length > 0) {
    const p = todo.pop()!;
    if (keptBy.has(p.baseName)) continue;
    keptBy.add(p.baseName);
    todo.push(...(await store.queryReferrers(p)));
    if (p.isDerivation()) {
      for (const out of (await store.queryDerivationOutputs(p)).values()) if (await store.isValidPath(out)) todo.push(out);
    }
  }
  const { findRoots } = await import('../store/local/roots.js');
  const lines: string[] = [];
  for (const [rootPath, links] of await findRoots(local)) {
    if (!keptBy.has(store.storeDir.parse(rootPath).baseName)) continue;
    for (const link of links) lines.push(`${link} -> ${rootPath}`);
  }
  return lines.sort();
}
