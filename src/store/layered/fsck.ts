/**
 * Cross-layer consistency of a layered store (`strata fsck`): what the layers disagree about
 * after lowers changed behind the upper's back.
 *
 * - dangling: an upper-DB row whose files are in no layer of the overlay (a new lower generation
 *   dropped it), and every upper path that refers to one;
 * - whiteout: an entry in the upper layer that hides a path a lower holds, or a file inside it
 *   (overlayfs marks them as 0:0 character devices);
 * - duplicate: a path both in the upper layer and in a lower of the overlay (harmless, costs space;
 *   a binary-cache lower's paths belong in the upper layer).
 */
import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import type { StorePath } from '../../core/store-path.js';
import { type LayeredStore, lowerCopyMatches } from './layered-store.js';

export interface FsckProblem {
  kind: 'dangling' | 'refers-to-dangling' | 'whiteout' | 'duplicate';
  path: string;
  detail: string;
}

export interface FsckReport {
  problems: FsckProblem[];
  repaired: string[];
  unrepaired: string[];
}

function isWhiteout(p: string): boolean {
  const st = lstatSync(p);
  return st.isCharacterDevice() && st.rdev === 0;
}

/**
 * The first whiteout inside an upper-layer tree, relative to it: a file deleted through the
 * merged dir from a lower path leaves the path's directories in the upper with a whiteout in them.
 */
function nestedWhiteout(p: string, rel = ''): string | undefined {
  if (!lstatSync(p).isDirectory()) return undefined;
  for (const e of readdirSync(p).sort()) {
    const child = join(p, e);
    if (isWhiteout(child)) return `${rel}${e}`;
    const deeper = nestedWhiteout(child, `${rel}${e}/`);
    if (deeper !== undefined) return deeper;
  }
  return undefined;
}

/** Finds every problem; with `repair`, fixes what it can and says what it cannot. */
export async function fsck(store: LayeredStore, options: { repair?: boolean } = {}): Promise<FsckReport> {
  const dir = store.storeDir;
  const problems: FsckProblem[] = [];
  const upperNames = new Set(readdirSync(store.upperLayer));
  const dangling: StorePath[] = [];
  /** Duplicates whose upper copy differs from the lower's: removing it would break its row. */
  const keep = new Set<string>();

  for (const path of await store.upper.queryAllValidPaths()) {
    if (upperNames.has(path.baseName) && !isWhiteout(join(store.upperLayer, path.baseName))) continue;
    if (store.overlayLowerHas(path)) continue;
    dangling.push(path);
    problems.push({ kind: 'dangling', path: dir.print(path), detail: 'its row is in the upper DB but no layer holds its files' });
  }
  const danglingNames = new Set(dangling.map((p) => p.baseName));
  for (const d of dangling) {
    for (const r of await store.upper.queryReferrers(d)) {
      if (!danglingNames.has(r.baseName)) problems.push({ kind: 'refers-to-dangling', path: dir.print(r), detail: `it refers to '${dir.print(d)}'` });
    }
  }
  for (const name of [...upperNames].sort()) {
    let path: StorePath;
    try {
      path = dir.parse(`${dir.path}/${name}`);
    } catch {
      continue;
    }
    const lower = store.overlayLowerHas(path);
    if (!lower) continue;
    const inUpper = join(store.upperLayer, name);
    const whole = isWhiteout(inUpper);
    const hidden = whole ? undefined : nestedWhiteout(inUpper);
    if (whole) {
      problems.push({ kind: 'whiteout', path: dir.print(path), detail: `the upper layer hides the copy in ${lower.name}` });
    } else if (hidden !== undefined) {
      problems.push({ kind: 'whiteout', path: dir.print(path), detail: `the upper layer hides '${hidden}' of the copy in ${lower.name}` });
    } else {
      // Other bytes under the same name (a rebuilt path): the upper copy is what its row says.
      if ((await lowerCopyMatches(store.upper, lower, path)) === false) {
        keep.add(dir.print(path));
        problems.push({ kind: 'duplicate', path: dir.print(path), detail: `both the upper layer and ${lower.name} hold it, with other contents: the upper copy is kept` });
      } else {
        problems.push({ kind: 'duplicate', path: dir.print(path), detail: `both the upper layer and ${lower.name} hold it` });
      }
    }
  }

  const report: FsckReport = { problems, repaired: [], unrepaired: [] };
  if (!options.repair) return report;
  const { removeTree } = await import('../../fs/remove-tree.js');
  for (const p of problems) {
    if (p.kind === 'whiteout' || (p.kind === 'duplicate' && !keep.has(p.path))) {
      // Removing the upper entry lets the lower copy show through again.
      store.requestRemount();
      removeTree(join(store.upperLayer, dir.parse(p.path).baseName));
      report.repaired.push(p.path);
    }
  }
  for (const d of dangling) {
    // Nothing in the overlay holds it: a binary-cache lower or a substituter could (strata.json).
    const fetched = await store.fetchFromSubstituters(d);
    (fetched ? report.repaired : report.unrepaired).push(dir.print(d));
  }
  store.remountIfNecessary();
  return report;
}
