/**
 * Writing and reading `.drv` files through any store: `strata derivation add` (JSON in, the
 * exact ATerm real Nix writes out) and reading a derivation back for `show` and builds.
 */
import { pathNotValid, StrataError } from '../core/error.js';
import { computeOutputPaths, type Derivation, derivationFromJson, parseDerivation, printDerivation } from '../core/derivation/index.js';
import { drvReferences } from '../core/derivation/types.js';
import type { StorePath } from '../core/store-path.js';
import type { Store } from './store.js';

/** Reads a `.drv` store path's file and parses it. */
export async function readDerivation(store: Store, drvPath: StorePath): Promise<Derivation> {
  const dir = store.storeDir;
  if (!drvPath.isDerivation()) {
    throw new StrataError('DRV_INVALID', `Cannot read derivation '${dir.print(drvPath)}': it does not end in '.drv'`, { value: dir.print(drvPath) });
  }
  const text = await readRegularFile(store, drvPath);
  return parseDerivation(dir, text, drvPath.name.slice(0, -'.drv'.length));
}

/**
 * A valid derivation's output paths in name order, read from the `.drv` as Nix reads them (a
 * binary cache has no table of outputs); an output whose path is known only once built is an
 * error.
 */
export async function derivationOutputPaths(store: Store, drvPath: StorePath): Promise<StorePath[]> {
  const shown = store.storeDir.print(drvPath);
  if (!(await store.isValidPath(drvPath))) throw pathNotValid(shown);
  const out: StorePath[] = [];
  for (const [name, o] of (await readDerivation(store, drvPath)).outputs) {
    if (!o.path) throw new StrataError('DRV_OUTPUT_UNKNOWN', `Cannot name output '${name}' of '${shown}': its path is known only once it is built`, { value: shown });
    out.push(o.path);
  }
  return out;
}

/** The contents of a store path that is a single regular file (a `.drv`, a text file). */
async function readRegularFile(store: Store, path: StorePath): Promise<Buffer> {
  const local = store as Store & { realPath?: (p: StorePath) => string };
  if (typeof local.realPath === 'function' && (await store.isValidPath(path))) {
    const { readFileSync } = await import('node:fs');
    return readFileSync(local.realPath(path));
  }
  const { narRegularFileContents } = await import('./nar-file.js');
  return narRegularFileContents(await store.narFromPath(path), store.storeDir.print(path));
}

/**
 * Adds a derivation given as JSON (`nix show-derivation` 2.8 form, with or without the outer key
 * and `name`, or newer Nix's form). Output paths are computed; any given must match.
 */
export async function addDerivationFromJson(store: Store, jsonText: string): Promise<StorePath> {
  let json: unknown;
  try {
    json = JSON.parse(jsonText);
  } catch (e) {
    throw new StrataError('DRV_JSON_INVALID', `Cannot read derivation JSON: ${(e as Error).message}`, { value: jsonText.slice(0, 80) });
  }
  const { derivation } = derivationFromJson(store.storeDir, json);
  return addDerivation(store, derivation);
}

/** Computes output paths, checks given ones, writes the ATerm as a text path. */
export async function addDerivation(store: Store, drv: Derivation): Promise<StorePath> {
  const dir = store.storeDir;
  const cache = new Map<string, Derivation>();
  const inputs = new Map<string, Derivation>();
  for (const base of drv.inputDrvs.keys()) {
    const p = dir.parse(`${dir.path}/${base}`);
    if (!(await store.isValidPath(p))) {
      throw new StrataError('REFERENCE_INVALID', `Cannot add derivation '${drv.name}': its input '${dir.print(p)}' is not valid`, { value: dir.print(p) });
    }
    inputs.set(base, await readDerivation(store, p));
  }
  // Input derivations of inputs are needed too (hashDerivationModulo recurses); read on demand.
  const pending = [...inputs.values()];
  while (pending.length > 0) {
    const d = pending.pop()!;
    for (const base of d.inputDrvs.keys()) {
      if (inputs.has(base) || cache.has(base)) continue;
      const sub = await readDerivation(store, dir.parse(`${dir.path}/${base}`));
      inputs.set(base, sub);
      pending.push(sub);
    }
  }
  const full = computeOutputPaths(dir, drv, (p) => {
    const d = inputs.get(p.baseName);
    if (!d) throw new StrataError('REFERENCE_INVALID', `Cannot add derivation '${drv.name}': input '${dir.print(p)}' is missing`, { value: dir.print(p) });
    return d;
  });
  for (const [name, o] of drv.outputs) {
    const want = full.outputs.get(name)!.path!;
    if (o.path && !o.path.equals(want)) {
      throw new StrataError('DRV_OUTPUT_MISMATCH', `Cannot add derivation '${drv.name}': output '${name}' is '${dir.print(o.path)}' but should be '${dir.print(want)}'`, { value: dir.print(o.path) });
    }
    const envValue = drv.env.get(name);
    if (envValue !== undefined && envValue !== '' && envValue !== dir.print(want)) {
      throw new StrataError('DRV_OUTPUT_MISMATCH', `Cannot add derivation '${drv.name}': env '${name}' is '${envValue}' but should be '${dir.print(want)}'`, { value: envValue });
    }
  }
  const aterm = printDerivation(dir, full);
  const info = await store.addText(`${drv.name}.drv`, aterm, drvReferences(full));
  return info.path;
}
