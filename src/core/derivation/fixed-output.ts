/**
 * The output path of a fixed-output derivation, which depends only on the declared hash and the
 * name (formats.md §3, §5): never on the builder or the inputs.
 */
import { StrataError } from '../error.js';
import { Hash } from '../hash.js';
import type { StoreDir, StorePath } from '../store-path.js';
import { type Derivation, isFixedOutput, parseOutputHashAlgo } from './types.js';

/**
 * The `out` path of a fixed-output derivation: a `source` path for `r:sha256`, a text path for
 * `text:sha256`, otherwise an `output:out` path over `fixed:out:<r:>algo:<hex>:`.
 *
 * @example fixedOutputPath(new StoreDir(), fixedFlatDrv).baseName // 'j50dpv4…-fixed-flat.txt'
 */
export function fixedOutputPath(storeDir: StoreDir, drv: Derivation): StorePath {
  const out = drv.outputs.get('out');
  if (!isFixedOutput(drv) || out === undefined) {
    throw new StrataError('DRV_INVALID', `Cannot compute fixed output path of '${drv.name}': it is not a fixed-output derivation`, {
      value: drv.name,
    });
  }
  const { method, algo } = parseOutputHashAlgo(out.hashAlgo!);
  const hash = new Hash(algo, Buffer.from(out.hash!, 'hex'));
  if (method === 'text') return storeDir.makeTextPath(drv.name, hash, []);
  return storeDir.makeFixedOutputPath(drv.name, hash, method === 'recursive');
}
