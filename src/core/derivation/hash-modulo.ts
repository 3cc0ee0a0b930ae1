/**
 * hashDerivationModulo (formats.md §5): the hash that input-addressed output paths are made
 * from. Fixed-output derivations hash to their declared content, so whatever depends on a FOD
 * ignores how it is built; other derivations hash their ATerm with each input `.drv` path
 * replaced by the (recursive) hash of that input.
 */

import { StrataError } from '../error.js';
import { Hash } from '../hash.js';
import { type StoreDir, StorePath } from '../store-path.js';
import { compareUtf8, printDerivation } from './aterm.js';
import { fixedOutputPath } from './fixed-output.js';
import { type Derivation, isFixedOutput } from './types.js';

/** Loads an input derivation (with its output paths filled in) by its `.drv` path. */
export type ReadDerivation = (drvPath: StorePath) => Derivation;

/** Output name → lowercase hex sha256. */
export type DerivationHashes = Map<string, string>;

/** Options for {@link hashDerivationModulo}. */
export interface HashDerivationModuloOptions {
  /**
   * Hash as if every output path and every env var named after an output were `""`. Used on a
   * derivation whose paths are being computed; inputs are always hashed unmasked.
   */
  maskOutputs?: boolean;
  /**
   * Memo of input derivations already hashed, keyed by `.drv` base name. Pass the same map to
   * many calls: in a deep graph each input is read and hashed once, not once per path to it.
   */
  cache?: Map<string, DerivationHashes>;
}

function sha256Hex(s: string): string {
  return Hash.of('sha256', s).toBase16();
}

/**
 * Computes hashDerivationModulo of `drv`: one hex sha256 per output. Pure: input derivations
 * come from `readDrv`.
 *
 * @example
 * ```ts
 * const h = hashDerivationModulo(new StoreDir(), masked, (p) => drvs.get(p.baseName)!, { maskOutputs: true });
 * new StoreDir().makeOutputPath('out', h.get('out')!, masked.name);
 * ```
 */
export function hashDerivationModulo(
  storeDir: StoreDir,
  drv: Derivation,
  readDrv: ReadDerivation,
  options: HashDerivationModuloOptions = {},
): DerivationHashes {
  const cache = options.cache ?? new Map<string, DerivationHashes>();
  if (isFixedOutput(drv)) {
    // Nix recomputes the FOD path from the hash here rather than trusting the stored one.
    const out = drv.outputs.get('out')!;
    const path = storeDir.print(fixedOutputPath(storeDir, drv));
    return new Map([['out', sha256Hex(`fixed:out:${out.hashAlgo!}:${out.hash!}:${path}`)]]);
  }

  const inputs2 = new Map<string, Set<string>>();
  for (const [base, wanted] of drv.inputDrvs) {
    let hashes = cache.get(base);
    if (hashes === undefined) {
      const input = readDrv(StorePath.fromBaseName(base));
      hashes = hashDerivationModulo(storeDir, input, readDrv, { cache });
      cache.set(base, hashes);
    }
    for (const output of wanted) {
      const h = hashes.get(output);
      if (h === undefined) {
        throw new StrataError('DRV_INVALID', `Cannot hash derivation '${drv.name}': input '${base}' has no output '${output}'`, { value: base });
      }
      // Several inputs may share one hash (e.g. two FODs with the same content): merge them.
      let set = inputs2.get(h);
      if (set === undefined) inputs2.set(h, (set = new Set()));
      set.add(output);
    }
  }
  const override = new Map([...inputs2].map(([k, v]) => [k, [...v].sort(compareUtf8)]));
  const h = sha256Hex(printDerivation(storeDir, drv, { maskOutputs: options.maskOutputs === true, inputDrvsOverride: override }));
  return new Map([...drv.outputs.keys()].map((o) => [o, h]));
}
