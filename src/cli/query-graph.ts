/**
 * `strata query --tree` and `--graph`: the reference graph drawn as `nix-store -q --tree` (box
 * characters, references before referrers, `[...]` for a path already drawn) and `--graph` (dot)
 * draw it, line by line. Lines go to `out` as they are made, so what was drawn before an invalid
 * path is shown before the error, as Nix shows it.
 */
import { pathNotValid } from '../core/error.js';
import { compareStorePaths, type StorePath } from '../core/store-path.js';
import { topoSortInfos } from '../store/closure.js';
import type { PathInfo, Store } from '../store/store.js';

type InfoOf = (p: StorePath) => Promise<PathInfo | undefined>;

function cachedInfos(store: Store): InfoOf {
  const infos = new Map<string, PathInfo | undefined>();
  return async (p) => {
    if (!infos.has(p.baseName)) infos.set(p.baseName, await store.queryPathInfo(p));
    return infos.get(p.baseName);
  };
}

/** Appends the tree of each root to `out`; a path is expanded once over all roots. */
export async function treeLines(store: Store, roots: StorePath[], out: string[]): Promise<void> {
  const infoOf = cachedInfos(store);
  const done = new Set<string>();
  const draw = async (p: StorePath, firstPad: string, tailPad: string): Promise<void> => {
    const shown = store.storeDir.print(p);
    if (done.has(p.baseName)) {
      out.push(`${firstPad}${shown} [...]`);
      return;
    }
    done.add(p.baseName);
    out.push(`${firstPad}${shown}`);
    const info = await infoOf(p);
    if (!info) throw pathNotValid(store.storeDir.print(p));
    // References first: the tree stays flat, a path's inputs drawn before the paths using them.
    // Nix sorts a reference it cannot read as one without references.
    const refs = await Promise.all(info.references.map(async (r) => (await infoOf(r)) ?? { path: r, references: [] }));
    const sorted = topoSortInfos(refs);
    for (const [n, child] of sorted.entries()) {
      const last = n + 1 === sorted.length;
      await draw(child.path, tailPad + (last ? '└───' : '├───'), tailPad + (last ? '    ' : '│   '));
    }
  };
  for (const root of roots) await draw(root, '', '');
}

const COLOURS = ['black', 'red', 'green', 'blue', 'magenta', 'burlywood'];

/** Appends the dot graph of the closure of `roots`: nodes in name order, edges from a reference to its referrer. */
export async function graphLines(store: Store, roots: StorePath[], out: string[]): Promise<void> {
  const infoOf = cachedInfos(store);
  const q = (s: string) => `"${s}"`;
  let edges = 0;
  // A set in name order, taken from the smallest, as Nix's std::set work list (a path already
  // drawn is left out: Nix takes it again only to skip it).
  const work = [...new Map(roots.map((p) => [p.baseName, p])).values()].sort(compareStorePaths);
  const done = new Set<string>();
  out.push('digraph G {');
  for (let p = work.shift(); p !== undefined; p = work.shift()) {
    const name = p.baseName;
    if (done.has(name)) continue;
    done.add(name);
    out.push(`${q(name)} [label = ${q(p.name)}, shape = box, style = filled, fillcolor = ${q('#ff0000')}];`);
    const info = await infoOf(p);
    if (!info) throw pathNotValid(store.storeDir.print(p));
    for (const r of [...info.references].sort(compareStorePaths)) {
      if (r.baseName === name) continue;
      if (!done.has(r.baseName)) insertSorted(work, r);
      out.push(`${q(r.baseName)} -> ${q(name)} [color = ${q(COLOURS[edges++ % COLOURS.length]!)}];`);
    }
  }
  out.push('}');
}

/** Inserts `p` into the name-ordered `list` unless it is there. */
function insertSorted(list: StorePath[], p: StorePath): void {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compareStorePaths(list[mid]!, p) < 0) lo = mid + 1;
    else hi = mid;
  }
  if (list[lo]?.baseName !== p.baseName) list.splice(lo, 0, p);
}
