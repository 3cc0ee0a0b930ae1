/**
 * From a spec's deps to valid store paths: `pkgs.NAME` through the package indexes, store paths
 * checked against every layer (a lower hit is copied up, in one batch for all deps: a 300-path
 * closure costs one transaction), `.drv` deps realised — their outputs taken when some layer
 * already has them, built (or substituted) otherwise. Every failure names the spec location.
 */
import { StrataError } from '../core/error.js';
import type { StorePath } from '../core/store-path.js';
import type { LocalFsStore } from '../store/store.js';
import { specError } from './_cursor.js';
import type { PackageIndex } from './package-index.js';
import type { EnvSpec, SpecDep } from './spec.js';

/** One dep and the store paths it stands for (several for a multi-output `.drv`). */
export interface ResolvedDep {
  dep: SpecDep;
  /** How the dep was written: `pkgs.hello` or the path. */
  written: string;
  /** The index entry's layer, for `pkgs.NAME`. */
  indexLayer?: string | undefined;
  paths: StorePath[];
}

/** Fetches paths no layer has from substituters; returns those it made valid. */
export type Substituter = (paths: StorePath[]) => Promise<StorePath[]>;

/** Builds derivations (the build module's `realise`), injected so this module does not load it. */
export type DrvRealiser = (
  store: LocalFsStore,
  drvPaths: StorePath[],
  options: { substitute?: Substituter | undefined },
) => Promise<Array<{ outputs?: Map<string, StorePath> | undefined; error?: Error | undefined }>>;

/** Options of {@link resolveDeps}. */
export interface ResolveOptions {
  index: PackageIndex;
  /** How missing `.drv` outputs are made (default: strata's `realise`, loaded on demand). */
  realise?: DrvRealiser | undefined;
  /** Asked for paths (and `.drv` outputs) that no layer has, before building. */
  substitute?: Substituter | undefined;
  /** Called once the layers have answered (and copied up) and before substituting or building. */
  afterCopyUp?: (() => void) | undefined;
}

interface Pending {
  dep: SpecDep;
  written: string;
  indexLayer?: string | undefined;
  path: StorePath;
  /** For `.drv` deps: wanted outputs (undefined: all). */
  outputs?: string[] | undefined;
}

/**
 * Resolves and realises every dep of `spec` in `store`, in spec order.
 *
 * @example const deps = await resolveDeps(store, spec, { index: PackageIndex.load(layout.indexes) });
 */
export async function resolveDeps(
  store: LocalFsStore,
  spec: EnvSpec,
  options: ResolveOptions,
): Promise<ResolvedDep[]> {
  const dir = store.storeDir;
  const at = (dep: SpecDep, what: string, code: string) =>
    specError(spec.file, dep.pos, what, code);
  const pending: Pending[] = [];
  for (const dep of spec.deps) {
    let target: string;
    let written: string;
    let indexLayer: string | undefined;
    if (dep.kind === 'attr') {
      written = `pkgs.${dep.name}`;
      const hit = options.index.lookup(dep.name);
      if (!hit) {
        const where =
          options.index.layers.length > 0
            ? `no package index has it (looked in ${options.index.layers.join(', ')})`
            : `'${store.uri}' publishes no package index`;
        const suggestion = options.index.suggest(dep.name);
        throw at(
          dep,
          `Unknown package '${written}': ${where}${suggestion ? `; did you mean 'pkgs.${suggestion}'?` : ''}`,
          'PACKAGE_UNKNOWN',
        );
      }
      target = hit.target;
      indexLayer = hit.layer;
    } else {
      written = dep.path;
      target = dep.path;
    }
    const bang = target.indexOf('!');
    const base = bang < 0 ? target : target.slice(0, bang);
    let path: StorePath;
    try {
      path = dir.parse(base);
    } catch (e) {
      const from = indexLayer
        ? ` (the package index of ${indexLayer} maps '${written}' to '${target}')`
        : '';
      throw at(
        dep,
        `Invalid store path '${base}': ${(e as Error).message.replace(/^Cannot parse store path '[^']*': /, '')}${from}`,
        'PATH_INVALID',
      );
    }
    let outputs: string[] | undefined;
    if (bang >= 0) {
      if (!path.isDerivation())
        throw at(dep, `Cannot pick outputs of '${base}': it is not a '.drv'`, 'PATH_INVALID');
      outputs = target.slice(bang + 1).split(',');
      if (outputs.some((o) => !/^[A-Za-z0-9_+.?=-]+$/.test(o)))
        throw at(
          dep,
          `Invalid output list '${target.slice(bang + 1)}' in '${target}'`,
          'PATH_INVALID',
        );
    }
    pending.push({ dep, written, indexLayer, path, outputs });
  }

  // One batch: a layered store copies up every lower hit's closure in one transaction; what no
  // layer has is then asked of the substituters (references first), as Nix substitutes.
  const valid = new Set(
    (await store.queryValidPaths(pending.map((p) => p.path))).map((p) => p.baseName),
  );
  options.afterCopyUp?.();
  const absent = pending.filter((p) => !valid.has(p.path.baseName));
  if (absent.length > 0 && options.substitute) {
    for (const p of await options.substitute(absent.map((a) => a.path))) valid.add(p.baseName);
  }
  for (const p of pending) {
    if (valid.has(p.path.baseName)) continue;
    const shown = dir.print(p.path);
    const via = p.indexLayer ? ` ('${p.written}' in the package index of ${p.indexLayer})` : '';
    const subs = options.substitute ? ' and no substituter has it' : '';
    throw at(
      p.dep,
      `Cannot use '${shown}'${via}: it is not valid in any layer of '${store.uri}'${subs}`,
      'PATH_NOT_VALID',
    );
  }

  const resolved: ResolvedDep[] = pending.map((p) => ({
    dep: p.dep,
    written: p.written,
    indexLayer: p.indexLayer,
    paths: p.path.isDerivation() ? [] : [p.path],
  }));
  const drvs = pending.map((p, i) => ({ p, i })).filter(({ p }) => p.path.isDerivation());
  if (drvs.length === 0) return resolved;

  // Outputs some layer already has need no build (and no build module).
  const toBuild: Array<{ p: Pending; i: number }> = [];
  for (const d of drvs) {
    const outs = await store.queryDerivationOutputs(d.p.path);
    const wanted = pickOutputs(d.p, outs, (what) => at(d.p.dep, what, 'OUTPUT_UNKNOWN'));
    const have = wanted && wanted.length > 0 ? await store.queryValidPaths(wanted) : [];
    if (wanted && wanted.length > 0 && have.length === wanted.length) resolved[d.i]!.paths = wanted;
    else toBuild.push(d);
  }
  if (toBuild.length === 0) return resolved;
  const realise = options.realise ?? defaultRealiser;
  const results = await realise(
    store,
    toBuild.map((d) => d.p.path),
    { substitute: options.substitute },
  );
  toBuild.forEach((d, k) => {
    const r = results[k];
    if (!r?.outputs) {
      const why = r?.error?.message ?? 'it was not built';
      throw at(
        d.p.dep,
        `Cannot realise '${dir.print(d.p.path)}': ${why}`,
        (r?.error as StrataError | undefined)?.code ?? 'BUILD_FAILED',
      );
    }
    resolved[d.i]!.paths = pickOutputs(d.p, r.outputs, (what) =>
      at(d.p.dep, what, 'OUTPUT_UNKNOWN'),
    )!;
  });
  return resolved;
}

/** The wanted outputs of a `.drv` dep, in output-name order; undefined when not known yet. */
function pickOutputs(
  p: Pending,
  outs: Map<string, StorePath>,
  fail: (what: string) => StrataError,
): StorePath[] | undefined {
  if (outs.size === 0) return undefined;
  const names = p.outputs ?? [...outs.keys()].sort();
  return names.map((n) => {
    const out = outs.get(n);
    if (!out)
      throw fail(
        `Derivation '${p.path.baseName}' has no output '${n}' (it has ${[...outs.keys()].sort().join(', ')})`,
      );
    return out;
  });
}

/** strata's own builds (src/build), loaded only when a dep needs building. */
const defaultRealiser: DrvRealiser = async (store, drvPaths, options) => {
  const { realise } = await import('../build/realise.js');
  return realise(store, drvPaths, { substitute: options.substitute });
};
