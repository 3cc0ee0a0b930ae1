/**
 * What registering a `.drv` adds besides its row: one `DerivationOutputs` row per output, after
 * checking that the output paths in the file are the ones Nix would compute (a mismatch aborts
 * the registration, as in Nix).
 */
import { readFileSync } from 'node:fs';

import { StrataError } from '../../core/error.js';
import { computeOutputPaths, parseDerivation } from '../../core/derivation/index.js';
import type { StorePath } from '../../core/store-path.js';
import type { LocalStore } from './local-store.js';

export function derivationOutputRows(store: LocalStore, aterm: string, drvPath: StorePath): Map<string, string> {
  const dir = store.storeDir;
  const drv = parseDerivation(dir, aterm, drvPath.name.slice(0, -'.drv'.length));
  // Input derivations are valid already (they are references), so read them from the store.
  const readDrv = (p: StorePath) => parseDerivation(dir, readFileSync(store.realPath(p), 'utf8'), p.name.slice(0, -'.drv'.length));
  const expected = computeOutputPaths(dir, drv, readDrv);
  const rows = new Map<string, string>();
  for (const [name, out] of drv.outputs) {
    const want = expected.outputs.get(name)?.path;
    if (!out.path || !want || !out.path.equals(want)) {
      throw new StrataError('DRV_OUTPUT_MISMATCH', `Cannot register '${dir.print(drvPath)}': output '${name}' should be '${want ? dir.print(want) : '?'}', not '${out.path ? dir.print(out.path) : ''}'`, { value: dir.print(drvPath) });
    }
    rows.set(name, dir.print(out.path));
  }
  return rows;
}
