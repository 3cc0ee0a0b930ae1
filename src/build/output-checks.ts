/**
 * The reference restrictions a derivation may put on its outputs (Nix 2.8's `checkOutputs`):
 * `allowedReferences`, `allowedRequisites`, `disallowedReferences` and `disallowedRequisites`,
 * each a whitespace-separated list of store paths or names of the derivation's own outputs.
 * With structured attributes they are per output, under `outputChecks`, with size limits too.
 * A violation fails the build before anything is registered, as in Nix.
 */
import { StrataError } from '../core/error.js';
import type { Derivation } from '../core/derivation/index.js';
import { type StorePath, sortStorePaths } from '../core/store-path.js';
import type { LocalFsStore, PathInfo } from '../store/store.js';
import { isJsonObject, JsonNumber, type JsonValue, stringsAttr } from './structured-attrs.js';

/** The restrictions on one output; an absent list means no restriction. */
export interface OutputChecks {
  allowedReferences?: string[] | undefined;
  allowedRequisites?: string[] | undefined;
  disallowedReferences?: string[] | undefined;
  disallowedRequisites?: string[] | undefined;
  /** Structured attributes only: limits on the output's NAR size and its closure's. */
  maxSize?: bigint | undefined;
  maxClosureSize?: bigint | undefined;
  /** Nix ignores an output's self-reference in the requisite checks of plain derivations. */
  ignoreSelfRefs: boolean;
}

/**
 * The checks of one output under structured attributes: `outputChecks.<output>` with the same
 * four lists (JSON lists of strings) and `maxSize`/`maxClosureSize`; self-references count.
 */
export function structuredOutputChecks(
  attrs: { [key: string]: JsonValue },
  outputName: string,
  what: string,
): OutputChecks | undefined {
  const all = attrs['outputChecks'];
  if (!isJsonObject(all)) return undefined;
  const o = all[outputName];
  if (!isJsonObject(o)) return undefined;
  const size = (k: string): bigint | undefined => {
    const v = o[k];
    if (v === undefined) return undefined;
    if (!(v instanceof JsonNumber) || !v.isInteger || v.literal.startsWith('-')) {
      throw new StrataError('DRV_INVALID', `Cannot build '${what}': 'outputChecks.${outputName}.${k}' must be a non-negative integer`, {
        value: k,
      });
    }
    return BigInt(v.literal);
  };
  return {
    allowedReferences: stringsAttr(o, 'allowedReferences', what),
    allowedRequisites: stringsAttr(o, 'allowedRequisites', what),
    disallowedReferences: stringsAttr(o, 'disallowedReferences', what),
    disallowedRequisites: stringsAttr(o, 'disallowedRequisites', what),
    maxSize: size('maxSize'),
    maxClosureSize: size('maxClosureSize'),
    ignoreSelfRefs: false,
  };
}

/** The checks of a derivation without structured attributes: the same for every output. */
export function legacyOutputChecks(drv: Derivation): OutputChecks {
  const list = (k: string): string[] | undefined => {
    const v = drv.env.get(k);
    return v === undefined ? undefined : v.split(/\s+/).filter((s) => s !== '');
  };
  return {
    allowedReferences: list('allowedReferences'),
    allowedRequisites: list('allowedRequisites'),
    disallowedReferences: list('disallowedReferences'),
    disallowedRequisites: list('disallowedRequisites'),
    ignoreSelfRefs: true,
  };
}

/**
 * Checks the freshly built outputs (`infos`, not registered yet) against their restrictions.
 * Throws `REFERENCE_NOT_ALLOWED` naming the offending paths, or `DRV_INVALID` for a specifier
 * that is neither a store path nor an output name.
 */
export async function checkOutputReferences(
  store: LocalFsStore,
  drvPath: StorePath,
  outputs: Map<string, StorePath>,
  infos: PathInfo[],
  checksOf: (outputName: string) => OutputChecks | undefined,
): Promise<void> {
  const dir = store.storeDir;
  const fresh = new Map(infos.map((i) => [i.path.baseName, i]));

  /** Closures of outputs (and their NAR size sums), each walked once though several checks may need it. */
  const closures = new Map<string, { paths: StorePath[]; size: number }>();
  /** The closure of an output; its sibling outputs are not valid yet, so their new infos count. */
  const closure = async (start: StorePath): Promise<{ paths: StorePath[]; size: number }> => {
    const known = closures.get(start.baseName);
    if (known !== undefined) return known;
    const done = new Map<string, StorePath>();
    let size = 0;
    const queue = [start];
    while (queue.length > 0) {
      const p = queue.shift()!;
      if (done.has(p.baseName)) continue;
      done.set(p.baseName, p);
      const info = fresh.get(p.baseName) ?? (await store.queryPathInfo(p));
      if (info === undefined) {
        throw new StrataError(
          'PATH_NOT_VALID',
          `Cannot check the references of '${dir.print(start)}': '${dir.print(p)}' is not valid`,
          { value: dir.print(p) },
        );
      }
      size += info.narSize;
      queue.push(...info.references);
    }
    const c = { paths: [...done.values()], size };
    closures.set(start.baseName, c);
    return c;
  };

  for (const [outputName, path] of outputs) {
    const info = fresh.get(path.baseName);
    if (info === undefined) continue; // Valid before this build: checked when it was built.
    const checks = checksOf(outputName);
    if (checks === undefined) continue;
    const check = async (
      spec: string[] | undefined,
      allowed: boolean,
      recursive: boolean,
      attr: string,
    ): Promise<void> => {
      if (spec === undefined) return;
      const specSet = new Set<string>();
      for (const s of spec) {
        if (dir.isStorePath(s)) specSet.add(dir.parse(s).baseName);
        else if (outputs.has(s)) specSet.add(outputs.get(s)!.baseName);
        else {
          throw new StrataError(
            'DRV_INVALID',
            `Cannot build '${dir.print(drvPath)}': '${attr}' holds '${s}', neither a store path nor an output name`,
            { value: s },
          );
        }
      }
      const used = recursive
        ? (await closure(path)).paths.filter((u) => !checks.ignoreSelfRefs || u.baseName !== path.baseName)
        : [...new Map(info.references.map((r) => [r.baseName, r])).values()];
      const bad = sortStorePaths(used.filter((u) => specSet.has(u.baseName) !== allowed));
      if (bad.length > 0) {
        throw new StrataError(
          'REFERENCE_NOT_ALLOWED',
          `Cannot register '${dir.print(path)}': it is not allowed to refer to ${bad.map((b) => `'${dir.print(b)}'`).join(', ')} (${attr})`,
          { value: dir.print(path) },
        );
      }
    };
    const full = dir.print(path);
    if (checks.maxSize !== undefined && BigInt(info.narSize) > checks.maxSize) {
      throw new StrataError(
        'OUTPUT_TOO_LARGE',
        `Cannot register '${full}': it is ${info.narSize} bytes, more than its maxSize of ${checks.maxSize}`,
        { value: full },
      );
    }
    if (checks.maxClosureSize !== undefined) {
      const { size } = await closure(path);
      if (BigInt(size) > checks.maxClosureSize) {
        throw new StrataError(
          'OUTPUT_TOO_LARGE',
          `Cannot register '${full}': its closure is ${size} bytes, more than its maxClosureSize of ${checks.maxClosureSize}`,
          { value: full },
        );
      }
    }
    // Nix's order: the first violated restriction is the one reported.
    await check(checks.allowedReferences, true, false, 'allowedReferences');
    await check(checks.allowedRequisites, true, true, 'allowedRequisites');
    await check(checks.disallowedReferences, false, false, 'disallowedReferences');
    await check(checks.disallowedRequisites, false, true, 'disallowedRequisites');
  }
}
