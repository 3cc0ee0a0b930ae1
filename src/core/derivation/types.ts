/**
 * The in-memory form of a store derivation (`.drv`), independent of its serialisation (ATerm or
 * JSON). Paths are {@link StorePath}s, so a derivation does not know its store dir; the
 * serialisers take one.
 */
import { StrataError } from '../error.js';
import { HASH_SIZES, type HashAlgo, isHashAlgo } from '../hash.js';
import { StorePath } from '../store-path.js';

/**
 * One output of a derivation, as the ATerm tuple `("<name>","<path>","<hashAlgo>","<hash>")`
 * spells it.
 *
 * - input-addressed: `path` set, `hashAlgo`/`hash` empty or absent;
 * - fixed-output: `hashAlgo` is `[r:|text:]<algo>` and `hash` is lowercase hex;
 * - not computed yet (masked, deferred, floating CA): `path` undefined.
 */
export interface DerivationOutput {
  path?: StorePath | undefined;
  /** `''`, `'sha256'`, `'r:sha256'`, `'text:sha256'`… */
  hashAlgo?: string | undefined;
  /** Lowercase hex of the expected hash, `''`, or `'impure'`. */
  hash?: string | undefined;
}

/**
 * A store derivation.
 *
 * @example
 * ```ts
 * const drv: Derivation = {
 *   name: 'hello', system: 'x86_64-linux', builder: '/bin/sh', args: ['-c', 'echo hi > $out'],
 *   outputs: new Map([['out', {}]]), inputDrvs: new Map(), inputSrcs: [],
 *   env: new Map([['name', 'hello']]),
 * };
 * ```
 */
export interface Derivation {
  /** The derivation name: the `.drv` base name without hash and `.drv`, or env `name`. */
  name: string;
  /** Output name → output; printed sorted by name. */
  outputs: Map<string, DerivationOutput>;
  /** Base name of an input `.drv` (`<hash>-<name>.drv`) → the wanted output names, sorted. */
  inputDrvs: Map<string, string[]>;
  /** Input sources (non-derivation store paths); printed sorted. */
  inputSrcs: StorePath[];
  system: string;
  builder: string;
  args: string[];
  /** Environment; printed sorted by key. */
  env: Map<string, string>;
}

/** How a content-addressed output is hashed: the prefix of `hashAlgo`. */
export type OutputHashMethod = 'flat' | 'recursive' | 'text';

/** `hashAlgo` split into its method and algorithm. */
export interface OutputHashAlgo {
  method: OutputHashMethod;
  algo: HashAlgo;
}

/**
 * Splits an ATerm `hashAlgo` (`sha256`, `r:sha256`, `text:sha256`) into method and algorithm.
 *
 * @example parseOutputHashAlgo('r:sha1') // { method: 'recursive', algo: 'sha1' }
 */
export function parseOutputHashAlgo(hashAlgo: string): OutputHashAlgo {
  let method: OutputHashMethod = 'flat';
  let rest = hashAlgo;
  if (rest.startsWith('r:')) {
    method = 'recursive';
    rest = rest.slice(2);
  } else if (rest.startsWith('text:')) {
    method = 'text';
    rest = rest.slice(5);
  }
  if (!isHashAlgo(rest)) {
    throw new StrataError('DRV_INVALID', `Cannot parse output hash algorithm '${hashAlgo}': unknown algorithm`, { value: hashAlgo });
  }
  return { method, algo: rest };
}

/**
 * The inverse of {@link parseOutputHashAlgo}.
 *
 * @example printOutputHashAlgo({ method: 'recursive', algo: 'sha256' }) === 'r:sha256'
 */
export function printOutputHashAlgo(h: OutputHashAlgo): string {
  return `${h.method === 'recursive' ? 'r:' : h.method === 'text' ? 'text:' : ''}${h.algo}`;
}

/** True when `hex` is lowercase hex of the digest size of `algo`. */
export function isHexDigest(hex: string, algo: HashAlgo): boolean {
  return hex.length === HASH_SIZES[algo] * 2 && /^[0-9a-f]*$/.test(hex);
}

/**
 * True for a fixed-output derivation as Nix 2.8 defines it: exactly one output, named `out`,
 * with a hash algorithm and a concrete hash.
 *
 * @example isFixedOutput(drv) // true for fetchurl-like derivations
 */
export function isFixedOutput(drv: Derivation): boolean {
  if (drv.outputs.size !== 1) return false;
  const out = drv.outputs.get('out');
  return out !== undefined && !!out.hashAlgo && !!out.hash && out.hash !== 'impure';
}

/**
 * The name of a derivation from its `.drv` store path (`<hash>-hello.drv` → `hello`).
 *
 * @example drvNameFromPath(StorePath.fromBaseName('3ghsl9sd83mc26i81adpa2fzf3yw4f68-simple.drv')) === 'simple'
 */
export function drvNameFromPath(drvPath: StorePath): string {
  if (!drvPath.isDerivation()) {
    throw new StrataError('DRV_INVALID', `Cannot take derivation name from '${drvPath.baseName}': it does not end in '.drv'`, {
      value: drvPath.baseName,
    });
  }
  return drvPath.name.slice(0, -'.drv'.length);
}

/**
 * The paths a `.drv` file refers to: its input sources and input derivations, sorted by base
 * name. Outputs are not references.
 *
 * @example drvReferences(drv).map((p) => p.baseName)
 */
export function drvReferences(drv: Derivation): StorePath[] {
  const byName = new Map<string, StorePath>();
  for (const p of drv.inputSrcs) byName.set(p.baseName, p);
  for (const base of drv.inputDrvs.keys()) byName.set(base, StorePath.fromBaseName(base));
  return [...byName.keys()].sort().map((k) => byName.get(k)!);
}

/**
 * The input derivations as store paths, sorted by base name.
 *
 * @example inputDrvPaths(drv).length === drv.inputDrvs.size
 */
export function inputDrvPaths(drv: Derivation): StorePath[] {
  return [...drv.inputDrvs.keys()].sort().map((b) => StorePath.fromBaseName(b));
}

/**
 * A deep copy, so callers can fill in paths without touching the original.
 *
 * @example const copy = cloneDerivation(drv); copy.env.set('x', 'y');
 */
export function cloneDerivation(drv: Derivation): Derivation {
  return {
    name: drv.name,
    outputs: new Map([...drv.outputs].map(([k, o]) => [k, { ...o }])),
    inputDrvs: new Map([...drv.inputDrvs].map(([k, v]) => [k, [...v]])),
    inputSrcs: [...drv.inputSrcs],
    system: drv.system,
    builder: drv.builder,
    args: [...drv.args],
    env: new Map(drv.env),
  };
}
