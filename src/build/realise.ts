/**
 * `realise`: make the outputs of derivations valid. For each derivation, in dependency order:
 * are the wanted outputs valid in the store (a layered store answers from its lowers and copies
 * up)? Can a substituter provide them? Otherwise realise its inputs and build it, at most `jobs`
 * builds at once, each under the per-output locks Nix also takes, so two processes (strata or
 * Nix) never build the same output at once: the second waits, sees it valid and reuses it.
 *
 * Inputs are only looked at when a derivation has to be built (as in Nix): a derivation whose
 * outputs are valid never needs its inputs.
 */
import { join } from 'node:path';

import pLimit, { type LimitFunction } from 'p-limit';

import { StrataError } from '../core/error.js';
import type { Derivation } from '../core/derivation/index.js';
import type { StorePath } from '../core/store-path.js';
import { readDerivation } from '../store/derivation-add.js';
import type { LocalFsStore, PathInfo } from '../store/store.js';
import { canIsolate } from './builder.js';
import { checkCanBuildLocally } from './platform.js';
import { buildDerivation } from './build-derivation.js';
import { BuildDirs } from './build-dirs.js';
import { BuildNamespace } from './namespace.js';

/** Options of {@link realise}. */
export interface RealiseOptions {
  /** Builds at once (default 1, Nix's `max-jobs` default). */
  jobs?: number | undefined;
  /** Keep building what does not depend on a failed build (default false: stop at the first). */
  keepGoing?: boolean | undefined;
  /** `NIX_BUILD_CORES` (default: the CPUs of this machine). */
  cores?: number | undefined;
  /**
   * `auto` (default): mount namespaces when running as root, else none if the store is at its
   * logical path; `namespace` and `none` force one.
   */
  isolation?: 'auto' | 'namespace' | 'none' | undefined;
  /**
   * Stops the run (an interrupted command): running builders are killed, nothing more starts,
   * and the run still cleans up (build dirs, namespace) before it returns.
   */
  signal?: AbortSignal | undefined;
  /** Asked for missing outputs before building; returns the paths it made valid. */
  substitute?: ((paths: StorePath[]) => Promise<StorePath[]>) | undefined;
  /** Builder output as it comes. */
  onLog?: ((drvPath: StorePath, chunk: Buffer) => void) | undefined;
  /** Progress and notes: `building`, `built`, `failed`, `valid`, `warning`. */
  onEvent?: ((event: RealiseEvent) => void) | undefined;
}

/** What {@link realise} reports while it works. */
export type RealiseEvent =
  | { type: 'building' | 'built'; drvPath: StorePath }
  | { type: 'failed'; drvPath: StorePath; error: Error }
  | { type: 'warning'; message: string };

/** The result of one requested derivation. */
export interface RealiseResult {
  drvPath: StorePath;
  /** Output name → path, when it succeeded. */
  outputs?: Map<string, StorePath> | undefined;
  error?: Error | undefined;
}

/**
 * Realises `drvPaths` (all outputs of each) and reports every one's outcome, in order. Failures
 * are in the results, not thrown; see {@link realiseOrThrow}.
 *
 * @example
 * ```ts
 * const [r] = await realise(store, [drvPath], { jobs: 2 });
 * r.outputs?.get('out'); // the built (or already valid) output path
 * ```
 */
export async function realise(
  store: LocalFsStore,
  drvPaths: StorePath[],
  options: RealiseOptions = {},
): Promise<RealiseResult[]> {
  return new Realiser(store, options).run(drvPaths);
}

/**
 * {@link realise}, throwing the first failure (a `BUILD_FAILED` or other `StrataError`) when any
 * derivation could not be realised; otherwise the outputs of each, in order.
 *
 * @example const [outs] = await realiseOrThrow(store, [drvPath]);
 */
export async function realiseOrThrow(
  store: LocalFsStore,
  drvPaths: StorePath[],
  options: RealiseOptions = {},
): Promise<Array<Map<string, StorePath>>> {
  const results = await realise(store, drvPaths, options);
  // A build cancelled because another failed is not the news: report the failure itself.
  const failed =
    results.find((r) => r.error && (r.error as StrataError).code !== 'BUILD_CANCELLED') ??
    results.find((r) => r.error);
  if (failed) throw failed.error!;
  return results.map((r) => r.outputs!);
}

class Realiser {
  private readonly goals = new Map<string, Promise<Map<string, StorePath>>>();
  private readonly drvs = new Map<string, Promise<Derivation>>();
  /** At most `jobs` builds at once. */
  private readonly slots: LimitFunction;
  private readonly abort = new AbortController();
  private readonly isolation: 'namespace' | 'none';
  private namespace: Promise<BuildNamespace> | undefined;
  /** Base names of the outputs being built right now (they share the namespace's upper). */
  private readonly running = new Set<string>();
  private readonly cleanups: Array<Promise<void>> = [];
  private readonly infos = new Map<string, PathInfo>();
  /** The run's build dirs, reused from build to build. */
  private readonly buildDirs = new BuildDirs();

  constructor(
    private readonly store: LocalFsStore,
    private readonly options: RealiseOptions,
  ) {
    this.slots = pLimit(Math.max(1, options.jobs ?? 1));
    this.isolation = this.chooseIsolation();
    if (options.signal?.aborted) this.abort.abort();
    else options.signal?.addEventListener('abort', () => this.abort.abort(), { once: true });
  }

  private chooseIsolation(): 'namespace' | 'none' {
    const wanted = this.options.isolation ?? 'auto';
    if (wanted !== 'auto') return wanted;
    if (canIsolate()) return 'namespace';
    if (this.store.realStoreDir !== this.store.storeDir.path) {
      throw new StrataError(
        'BUILD_SETUP_FAILED',
        `Cannot build into '${this.store.uri}': its files are in '${this.store.realStoreDir}', not at '${this.store.storeDir.path}', and only root can show them there to builders`,
        {
          value: this.store.uri,
        },
      );
    }
    this.options.onEvent?.({
      type: 'warning',
      message:
        'not running as root: builds run without a mount namespace and can write anywhere in the store',
    });
    return 'none';
  }

  async run(drvPaths: StorePath[]): Promise<RealiseResult[]> {
    let settled: Array<PromiseSettledResult<Map<string, StorePath>>>;
    try {
      settled = await Promise.allSettled(drvPaths.map((p) => this.goal(p, undefined)));
    } finally {
      if (this.namespace) await (await this.namespace.catch(() => undefined))?.close();
      await Promise.all(this.cleanups);
      this.buildDirs.close();
    }
    return settled.map((s, i) =>
      s.status === 'fulfilled'
        ? { drvPath: drvPaths[i]!, outputs: s.value }
        : { drvPath: drvPaths[i]!, error: s.reason as Error },
    );
  }

  /** The run's shared build namespace, opened once on first use; errors reach its users. */
  private openNamespace(): Promise<BuildNamespace> {
    this.namespace ??= BuildNamespace.open(
      this.store.realStoreDir,
      this.store.storeDir.path,
      join(this.store.stateDir, 'builds'),
    );
    return this.namespace;
  }

  /** Derivations already known to have no cycle below them. */
  private readonly acyclic = new Set<string>();

  /**
   * Refuses a derivation that (through its inputs) needs itself. Honest `.drv` paths cannot,
   * but a cache or a copied store can name paths as it likes, and goals waiting on themselves
   * would never settle. Faults other than cycles are left for the goals to report.
   */
  private async checkAcyclic(drvPath: StorePath, stack: Set<string>): Promise<void> {
    if (this.acyclic.has(drvPath.baseName)) return;
    if (stack.has(drvPath.baseName)) {
      const full = this.store.storeDir.print(drvPath);
      throw new StrataError(
        'DRV_INVALID',
        `Cannot realise '${full}': its inputs form a cycle (${[...stack, drvPath.baseName].join(' -> ')})`,
        { value: full },
      );
    }
    let drv: Derivation;
    try {
      drv = await this.readDrv(drvPath);
    } catch {
      return;
    }
    stack.add(drvPath.baseName);
    for (const base of drv.inputDrvs.keys())
      await this.checkAcyclic(
        this.store.storeDir.parse(`${this.store.storeDir.path}/${base}`),
        stack,
      );
    stack.delete(drvPath.baseName);
    this.acyclic.add(drvPath.baseName);
  }

  private readDrv(drvPath: StorePath): Promise<Derivation> {
    let p = this.drvs.get(drvPath.baseName);
    if (!p) {
      p = (async () => {
        if (!(await this.store.isValidPath(drvPath))) {
          const full = this.store.storeDir.print(drvPath);
          throw new StrataError(
            'PATH_NOT_VALID',
            `Cannot realise '${full}': it is not valid in '${this.store.uri}'`,
            { value: full },
          );
        }
        return readDerivation(this.store, drvPath);
      })();
      this.drvs.set(drvPath.baseName, p);
    }
    return p;
  }

  /** Realises the wanted outputs (all when undefined) of one derivation, once per process. */
  private goal(drvPath: StorePath, wanted: string[] | undefined): Promise<Map<string, StorePath>> {
    const key = `${drvPath.baseName}!${wanted ? [...wanted].sort().join(',') : '*'}`;
    let g = this.goals.get(key);
    if (!g) {
      g = this.realiseOne(drvPath, wanted);
      g.catch(() => {}); // Reported through whoever awaits it.
      this.goals.set(key, g);
    }
    return g;
  }

  private async missingOutputs(
    outputs: Map<string, StorePath>,
    wanted: string[],
  ): Promise<string[]> {
    const missing: string[] = [];
    for (const name of wanted)
      if (!(await this.store.isValidPath(outputs.get(name)!))) missing.push(name);
    return missing;
  }

  private async realiseOne(
    drvPath: StorePath,
    wanted0: string[] | undefined,
  ): Promise<Map<string, StorePath>> {
    const store = this.store;
    const full = store.storeDir.print(drvPath);
    const drv = await this.readDrv(drvPath);
    const outputs = new Map<string, StorePath>();
    for (const [name, o] of drv.outputs) {
      if (!o.path)
        throw new StrataError(
          'UNSUPPORTED',
          `Cannot realise '${full}': output '${name}' has no path (floating content-addressed outputs are not supported)`,
          { value: full },
        );
      outputs.set(name, o.path);
    }
    const wanted = wanted0 ?? [...outputs.keys()];
    for (const name of wanted) {
      if (!outputs.has(name))
        throw new StrataError(
          'DRV_INVALID',
          `Cannot realise '${full}': it has no output '${name}'`,
          { value: full },
        );
    }
    let missing = await this.missingOutputs(outputs, wanted);
    if (missing.length > 0 && this.options.substitute) {
      await this.options.substitute(missing.map((n) => outputs.get(n)!));
      missing = await this.missingOutputs(outputs, wanted);
    }
    if (missing.length === 0) return outputs;
    // Something will be built: set the namespace up now, while inputs and the other goals are
    // still being read (unshare, two mounts and the spawner's start cost ~100-250 ms here, all of
    // which used to wait in front of the first build).
    if (this.isolation === 'namespace') void this.openNamespace().catch(() => {});

    // Inputs: every wanted output of every input derivation, and the sources. Checked for a
    // cycle first (only now: derivations whose outputs are valid never need their inputs read).
    await this.checkAcyclic(drvPath, new Set());
    const inputs = await Promise.allSettled(
      [...drv.inputDrvs].map(([base, outs]) =>
        this.goal(store.storeDir.parse(`${store.storeDir.path}/${base}`), outs),
      ),
    );
    const failedInputs = inputs.filter((r) => r.status === 'rejected');
    if (failedInputs.length > 0) {
      const first = (failedInputs[0] as PromiseRejectedResult).reason as Error;
      if (failedInputs.length === 1 && this.options.keepGoing !== true) throw first;
      throw new StrataError(
        'DEPENDENCY_FAILED',
        `Cannot build '${full}': ${failedInputs.length} of its dependencies failed`,
        { value: full, cause: first },
      );
    }
    const inputPaths: StorePath[] = [...drv.inputSrcs];
    for (const [i, [, outs]] of [...drv.inputDrvs].entries()) {
      const got = (inputs[i] as PromiseFulfilledResult<Map<string, StorePath>>).value;
      for (const o of outs) inputPaths.push(got.get(o)!);
    }
    for (const src of drv.inputSrcs) {
      if (!(await store.isValidPath(src))) {
        throw new StrataError(
          'PATH_NOT_VALID',
          `Cannot build '${full}': its input '${store.storeDir.print(src)}' is not valid`,
          { value: store.storeDir.print(src) },
        );
      }
    }
    for (const p of inputPaths) await store.addTempRoot(p);
    const inputClosure = await this.closure(inputPaths);
    // As Nix, only now that it must be built here (after substitution and the inputs).
    checkCanBuildLocally(drv, full);

    await this.slots(async () => {
      this.checkNotStopped(full);
      const outPaths = [...outputs.values()];
      for (const p of outPaths) await store.addTempRoot(p);
      await store.withPathLocks(outPaths, async () => {
        // Another process may have built it while we waited for the locks.
        if ((await this.missingOutputs(outputs, wanted)).length === 0) return;
        this.checkNotStopped(full);
        const alreadyValid = new Set<string>();
        for (const [name, p] of outputs) if (await store.isValidPath(p)) alreadyValid.add(name);
        this.options.onEvent?.({ type: 'building', drvPath });
        const mine = outPaths.map((p) => p.baseName);
        for (const b of mine) this.running.add(b);
        try {
          await buildDerivation(
            store,
            { drvPath, drv, outputs, alreadyValid, inputClosure },
            {
              isolation: this.isolation,
              namespace: () => this.openNamespace(),
              buildDirs: this.buildDirs,
              // Live: builds that start while this one runs put their outputs in the upper too.
              othersOutputs: this.running,
              cores: this.options.cores,
              defer: (p) => this.cleanups.push(p),
              onLog: this.options.onLog,
              signal: this.abort.signal,
            },
          );
        } catch (e) {
          this.options.onEvent?.({ type: 'failed', drvPath, error: e as Error });
          // Without --keep-going the first failure stops everything, running builds included.
          if (this.options.keepGoing !== true && !this.abort.signal.aborted) this.abort.abort();
          throw e;
        } finally {
          for (const b of mine) this.running.delete(b);
        }
        this.options.onEvent?.({ type: 'built', drvPath });
      });
    });
    return outputs;
  }

  /**
   * The closure of valid paths, with path infos cached for the run: a chain of 100 builds asks
   * for 5,000 closure members, each a DB query otherwise (~200 ms of 100 builds).
   */
  private async closure(paths: StorePath[]): Promise<StorePath[]> {
    const seen = new Map<string, StorePath>();
    const todo = [...paths];
    while (todo.length > 0) {
      const p = todo.pop()!;
      if (seen.has(p.baseName)) continue;
      seen.set(p.baseName, p);
      let info = this.infos.get(p.baseName);
      if (!info) {
        info = await this.store.queryPathInfo(p);
        if (!info) {
          const full = this.store.storeDir.print(p);
          throw new StrataError(
            'PATH_NOT_VALID',
            `Cannot compute the closure of '${full}': it is not valid in '${this.store.uri}'`,
            { value: full },
          );
        }
        this.infos.set(p.baseName, info);
      }
      for (const r of info.references) if (!seen.has(r.baseName)) todo.push(r);
    }
    return [...seen.values()];
  }

  private checkNotStopped(full: string): void {
    if (this.abort.signal.aborted) {
      throw new StrataError(
        'BUILD_CANCELLED',
        `Cannot build '${full}': stopped after another build failed (use --keep-going to continue)`,
        { value: full },
      );
    }
  }
}
