/** `strata query --roots`: the roots (as `link -> path` lines) whose closure holds `path`. */
import { StrataError } from '../core/error.js';
import type { StorePath } from '../core/store-path.js';
import type { Store } from '../store/store.js';

export async function rootsOf(store: Store, path: StorePath): Promise<string[]> {
  const { LocalStore } = await import('../store/local/local-store.js');
  const { LayeredStore } = await import('../store/layered/layered-store.js');
  // A layered store's roots live in its upper state dir, as in Nix's overlay store.
  const local = store instanceof LayeredStore ? store.upper : store;
  if (!(local instanceof LocalStore)) {
    throw new StrataError('UNSUPPORTED', `Cannot list the roots of '${store.storeDir.print(path)}': '${store.uri}' has no GC roots`, { value: store.uri });
  }
  const { findRoots } = await import('../store/local/roots.js');
  const { computeClosure } = await import('../store/closure.js');
  const roots = await findRoots(local);
  const lines: string[] = [];
  for (const [rootPath, links] of roots) {
    const p = store.storeDir.parse(rootPath);
    if (!(await store.isValidPath(p))) continue;
    const closure = await computeClosure(store, [p]);
    if (closure.has(path.baseName)) for (const link of links) lines.push(`${link} -> ${rootPath}`);
  }
  return lines.sort();
}
