/**
 * One build: prepare the build dir and the scratch overlay, run the builder, check and register
 * its outputs, clean up. The caller holds the outputs' path locks and has realised the inputs.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

import { StrataError } from '../core/error.js';
import type { Derivation } from '../core/derivation/index.js';
import type { StorePath } from '../core/store-path.js';
import { removeTree } from '../fs/remove-tree.js';
import type { LocalFsStore, PathInfo } from '../store/store.js';
import { type Isolation, runBuilder } from './builder.js';
import { builderEnvironment } from './environment.js';
import { exportReferencesGraph, exportReferencesGraphJson } from './export-references.js';
import { structuredAttrsOf } from './structured-attrs.js';
import { BuildLog } from './logs.js';
import type { BuildNamespace } from './namespace.js';
import { checkOutputs, publishOutputs } from './register-outputs.js';
import { lexists } from '../fs/exists.js';
import { BuildDirs } from './build-dirs.js';
import { isBuiltinBuilder, runBuiltin } from './builtins/index.js';

/** Lines of log shown when a build fails (as Nix's default `log-lines`). */
export const LOG_TAIL_LINES = 10;

/** A builder that failed: the message says how, `logTail` and `logPath` say why. */
export class BuildFailure extends StrataError {
  constructor(
    message: string,
    readonly logTail: string[],
    readonly logPath: string,
    value: string,
  ) {
    super('BUILD_FAILED', message, { value, hint: `the full log is in '${logPath}'` });
  }
}

/** How to run one build. */
export interface BuildOptions {
  /**
   * `namespace` (root): in the shared build namespace, or in a namespace of its own when some
   * outputs already exist validly; `none`: the builder writes into the store directly.
   */
  isolation: 'namespace' | 'none';
  /** The run's shared build namespace, opened on first use (with `namespace`). */
  namespace?: (() => Promise<BuildNamespace>) | undefined;
  /** Base names of the outputs of other builds running in the shared namespace now. */
  othersOutputs?: ReadonlySet<string> | undefined;
  /**
   * Takes the removal of the build's private temp dir off the critical path (the caller awaits
   * it later); without it the removal is synchronous. rmdir costs 1.5–15 ms on this VM's ext4.
   */
  defer?: ((cleanup: Promise<void>) => void) | undefined;
  /**
   * The run's build dirs (build-dirs.ts), reused from build to build; the caller closes it.
   * Without it the build makes and removes a temp dir of its own.
   */
  buildDirs?: BuildDirs | undefined;
  /** `NIX_BUILD_CORES`. */
  cores?: number | undefined;
  /** Receives the builder's output as it comes (`-v`). */
  onLog?: ((drvPath: StorePath, chunk: Buffer) => void) | undefined;
  signal?: AbortSignal | undefined;
}

/**
 * Runs a `builtin:` builder into `stagedDir`, its messages in the build log as Nix's are (an
 * error as `error: …`). Returns the error message when it failed.
 */
async function runBuiltinLogged(
  store: LocalFsStore,
  req: BuildRequest,
  stagedDir: string,
  logFd: number,
  signal: AbortSignal | undefined,
): Promise<string | undefined> {
  const log = (line: string): void => {
    writeSync(logFd, `${line}\n`);
  };
  const out = req.outputs.get('out');
  const target = join(stagedDir, out?.baseName ?? 'out');
  try {
    await runBuiltin(req.drv.builder, {
      env: req.drv.env,
      target,
      storeDir: store.storeDir.path,
      realStoreDir: store.realStoreDir,
      log,
      signal,
    });
    return undefined;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    log(`error: ${message}`);
    // A partial output goes with the scratch dir it is in (the caller's finally).
    return message;
  }
}

/** What to build. */
export interface BuildRequest {
  drvPath: StorePath;
  drv: Derivation;
  /** Every output of the derivation. */
  outputs: Map<string, StorePath>;
  /** Outputs already valid (kept; the builder's new copies are dropped). */
  alreadyValid: Set<string>;
  /** The closure of the inputs, the reference candidates besides the outputs. */
  inputClosure: StorePath[];
}

/**
 * Builds a derivation and registers its new outputs; returns their path infos. On any failure
 * nothing is registered and no output is left in the store.
 *
 * @example await buildDerivation(store, { drvPath, drv, outputs, alreadyValid: new Set(), inputClosure }, { isolation: 'namespace', namespace: () => ns });
 */
export async function buildDerivation(
  store: LocalFsStore,
  req: BuildRequest,
  options: BuildOptions,
): Promise<PathInfo[]> {
  const drvName = req.drvPath.name; // `simple.drv`
  const ownDirs = options.buildDirs ? undefined : new BuildDirs();
  const dirs = options.buildDirs ?? ownDirs!;
  const buildDir = dirs.acquire(drvName);
  const rawLog = dirs.rawLog(buildDir);
  let scratch: string | undefined;
  /** What this build may have left in a shared upper (or in the store, without isolation). */
  const inUpper: string[] = [];
  try {
    const attrs = structuredAttrsOf(req.drv.env, store.storeDir.print(req.drvPath));
    const { env, files } = builderEnvironment(req.drv, {
      storeDir: store.storeDir.path,
      buildDir,
      cores: options.cores,
      outputPaths: new Map([...req.outputs].map(([n, p]) => [n, store.storeDir.print(p)])),
      exportedGraphs:
        attrs && (await exportReferencesGraphJson(store, req.drvPath, attrs, req.inputClosure)),
    });
    if (attrs === undefined)
      files.push(...(await exportReferencesGraph(store, req.drvPath, req.drv, req.inputClosure)));
    for (const f of files) {
      // As Nix writes them: mode 0666 less its umask (0022).
      writeFileSync(join(buildDir, f.name), f.contents, { mode: 0o644 });
    }

    let isolation: Isolation;
    let stagedDir: string;
    const fresh = [...req.outputs]
      .filter(([name]) => !req.alreadyValid.has(name))
      .map(([, p]) => p);
    // Scratch next to the state dir: usually the store's file system, so outputs are renamed, not copied.
    const newScratch = (): string => {
      const buildsDir = join(store.stateDir, 'builds');
      mkdirSync(buildsDir, { recursive: true });
      return mkdtempSync(join(buildsDir, `${req.drvPath.hashPart}-`));
    };
    const builtin = isBuiltinBuilder(req.drv.builder);
    if (builtin) {
      // Written by strata itself, so no namespace: a private dir, renamed into the store after the checks.
      scratch = newScratch();
      stagedDir = join(scratch, 'upper');
      mkdirSync(stagedDir);
      isolation = { kind: 'none' };
    } else if (options.isolation === 'namespace' && req.alreadyValid.size === 0 && options.namespace) {
      const ns = await options.namespace();
      // Invalid leftovers of an interrupted build would show through the overlay: we hold the locks.
      for (const p of fresh) if (lexists(store.realPath(p))) removeTree(store.realPath(p));
      stagedDir = ns.upperDir;
      for (const p of fresh) inUpper.push(join(stagedDir, p.baseName));
      isolation = { kind: 'session', namespace: ns };
    } else if (options.isolation === 'namespace') {
      scratch = newScratch();
      for (const d of ['upper', 'work', 'tmp']) mkdirSync(join(scratch, d));
      stagedDir = join(scratch, 'upper');
      const whiteouts = [...req.outputs.values()]
        .map((p) => p.baseName)
        .filter((b) => lexists(join(store.realStoreDir, b)));
      isolation = {
        kind: 'overlay',
        realStoreDir: store.realStoreDir,
        logicalStoreDir: store.storeDir.path,
        upperDir: stagedDir,
        workDir: join(scratch, 'work'),
        scratchDir: join(scratch, 'tmp'),
        whiteouts,
      };
    } else {
      if (req.alreadyValid.size > 0) {
        const full = store.storeDir.print(req.drvPath);
        throw new StrataError(
          'UNSUPPORTED',
          `Cannot rebuild '${full}' without a mount namespace: some of its outputs are valid and the builder would overwrite them`,
          {
            value: full,
            hint: 'run as root, or delete its valid outputs first',
          },
        );
      }
      // Without a namespace the builder writes into the store itself: clear invalid leftovers
      // first (we hold the locks) and remember what we created, to remove it on failure.
      stagedDir = store.realStoreDir;
      for (const p of fresh) {
        if (lexists(store.realPath(p))) removeTree(store.realPath(p));
        inUpper.push(store.realPath(p));
      }
      isolation = { kind: 'none' };
    }

    const log = new BuildLog(
      store.logDir,
      req.drvPath,
      rawLog,
      options.onLog ? (c) => options.onLog!(req.drvPath, c) : undefined,
    );
    let exit;
    let builtinError: string | undefined;
    try {
      if (builtin) builtinError = await runBuiltinLogged(store, req, stagedDir, log.fd, options.signal);
      // A failed builtin is reported from builtinError below, before the exit code is looked at.
      exit = builtin ? { code: 0, signal: null } : await runBuilder({
        builder: req.drv.builder,
        args: req.drv.args,
        env,
        buildDir,
        isolation,
        logFd: log.fd,
        logPath: log.rawPath,
        signal: options.signal,
      });
    } finally {
      await log.close();
    }
    const full = store.storeDir.print(req.drvPath);
    if (options.signal?.aborted) {
      throw new StrataError(
        'BUILD_CANCELLED',
        `Cannot build '${full}': the build was cancelled after another build failed`,
        { value: full },
      );
    }
    if (builtinError !== undefined) {
      throw new BuildFailure(
        `Cannot build '${full}': ${req.drv.builder} failed: ${builtinError}`,
        log.tailLines(LOG_TAIL_LINES),
        log.path,
        full,
      );
    }
    if (exit.code !== 0) {
      const how =
        exit.code === null
          ? `was killed by signal ${exit.signal ?? '?'}`
          : `failed with exit code ${exit.code}`;
      throw new BuildFailure(
        `Cannot build '${full}': builder ${how}`,
        log.tailLines(LOG_TAIL_LINES),
        log.path,
        full,
      );
    }
    let infos: PathInfo[];
    try {
      infos = await checkOutputs(store, {
        drvPath: req.drvPath,
        drv: req.drv,
        outputs: req.outputs,
        alreadyValid: req.alreadyValid,
        stagedDir,
        checkOutside: builtin || isolation.kind !== 'none',
        othersOutputs: isolation.kind === 'session' ? options.othersOutputs : undefined,
        inputClosure: req.inputClosure,
      });
    } catch (e) {
      if (isolation.kind === 'session' && (e as StrataError).code === 'BUILD_WROTE_OUTSIDE') {
        // Stray entries in the shared upper would fail the next build too; the store never saw them.
        for (const entry of readdirSync(stagedDir))
          if (!options.othersOutputs?.has(entry)) removeTree(join(stagedDir, entry));
      }
      throw e;
    }
    await publishOutputs(store, stagedDir, infos);
    inUpper.length = 0;
    return infos;
  } finally {
    for (const p of inUpper) if (lexists(p)) removeTree(p);
    rmSync(rawLog, { force: true });
    // Moved out of its name at once, removed off the main thread (build-dirs.ts).
    const finished = dirs.release(buildDir);
    if (options.defer)
      options.defer(rm(finished, { recursive: true, force: true }).catch(() => removeTree(finished)));
    else removeTree(finished);
    ownDirs?.close();
    if (scratch !== undefined) removeTree(scratch);
  }
}
