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

/** `where` says where an input derivation's file is: a batch being added has them staged. */
export function derivationOutputRows(store: LocalStore, aterm: string, drvPath: StorePath, where: (p: StorePath) => string = (p) => store.realPath(p)): Map<string, string> {
  const dir = store.storeDir;
  const drv = parseDerivation(dir, aterm, drvPath.name.slice(0, -'.drv'.length));
  // Input derivations are references: valid already, or staged in the same batch.
  const readDrv = (p: StorePath) => parseDerivation(dir, readFileSync(where(p), 'utf8'), p.name.slice(0, -'.drv'.length));
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
