/**
 * What `derivation` does after evaluation (formats.md §5): compute the output paths, fill them
 * into the outputs and the env, then the `.drv` path itself.
 */
import { Hash } from '../hash.js';
import type { StoreDir, StorePath } from '../store-path.js';
import { printDerivation } from './aterm.js';
import { fixedOutputPath } from './fixed-output.js';
import { type DerivationHashes, hashDerivationModulo, type ReadDerivation } from './hash-modulo.js';
import { cloneDerivation, type Derivation, drvReferences, isFixedOutput } from './types.js';

/**
 * A copy with every output path unset and every env var named after an output set to `""`:
 * the form whose hash gives input-addressed output paths.
 *
 * @example maskOutputs(drv).env.get('out') === ''
 */
export function maskOutputs(drv: Derivation): Derivation {
  const masked = cloneDerivation(drv);
  for (const [name, o] of masked.outputs) {
    o.path = undefined;
    masked.env.set(name, '');
  }
  return masked;
}

/**
 * Computes the output paths and returns a copy with them filled into `outputs` and the env
 * (`out`, `dev`…), as `nix-instantiate` writes it. Existing paths in `drv` are ignored.
 *
 * - fixed-output: `out` comes from the declared hash ({@link fixedOutputPath});
 * - input-addressed: `makeOutputPath(o, hdm(masked), name)`, named `<name>-<o>` unless `o` is `out`.
 *
 * @example
 * ```ts
 * const full = computeOutputPaths(dir, parsed, (p) => readDrv(p));
 * dir.print(full.outputs.get('out')!.path!) // '/nix/store/94f9…-simple'
 * ```
 */
export function computeOutputPaths(
  storeDir: StoreDir,
  drv: Derivation,
  readDrv: ReadDerivation,
  options: { cache?: Map<string, DerivationHashes> } = {},
): Derivation {
  if (isFixedOutput(drv)) {
    const result = cloneDerivation(drv);
    const path = fixedOutputPath(storeDir, drv);
    result.outputs.get('out')!.path = path;
    result.env.set('out', storeDir.print(path));
    return result;
  }
  const masked = maskOutputs(drv);
  const hashes = hashDerivationModulo(storeDir, masked, readDrv, { maskOutputs: true, ...(options.cache ? { cache: options.cache } : {}) });
  for (const [name, o] of masked.outputs) {
    const path = storeDir.makeOutputPath(name, hashes.get(name)!, drv.name);
    o.path = path;
    masked.env.set(name, storeDir.print(path));
  }
  return masked;
}

/**
 * The `.drv` store path: a text path named `<name>.drv` over the exact ATerm, referring to the
 * input sources and input derivations.
 *
 * @example derivationPath(new StoreDir(), drv).baseName // '3ghsl9sd83mc26i81adpa2fzf3yw4f68-simple.drv'
 */
export function derivationPath(storeDir: StoreDir, drv: Derivation): StorePath {
  const text = printDerivation(storeDir, drv);
  return storeDir.makeTextPath(`${drv.name}.drv`, Hash.of('sha256', text), drvReferences(drv));
}
