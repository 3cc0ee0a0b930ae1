/**
 * One build: prepare the build dir and the scratch overlay, run the builder, check and register
 * its outputs, clean up. The caller holds the outputs' path locks and has realised the inputs.
 */
import { lstatSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { StrataError } from '../core/error.js';
import type { Derivation } from '../core/derivation/index.js';
import type { StorePath } from '../core/store-path.js';
import { removeTree } from '../store/local/staging.js';
import type { LocalFsStore, PathInfo } from '../store/store.js';
import { type Isolation, runBuilder } from './builder.js';
import { builderEnvironment } from './environment.js';
import { BuildLog } from './logs.js';
import { checkOutputs, publishOutputs } from './register-outputs.js';

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
  /** `overlay` (a mount namespace; needs root) or `none` (builder writes into the store directly). */
  isolation: 'overlay' | 'none';
  /** `NIX_BUILD_CORES`. */
  cores?: number | undefined;
  /** Receives the builder's output as it comes (`-v`). */
  onLog?: ((drvPath: StorePath, chunk: Buffer) => void) | undefined;
  signal?: AbortSignal | undefined;
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

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Builds a derivation and registers its new outputs; returns their path infos. On any failure
 * nothing is registered and no output is left in the store.
 *
 * @example await buildDerivation(store, { drvPath, drv, outputs, alreadyValid: new Set(), inputClosure }, { isolation: 'overlay' });
 */
export async function buildDerivation(store: LocalFsStore, req: BuildRequest, options: BuildOptions): Promise<PathInfo[]> {
  const drvName = req.drvPath.name; // `simple.drv`
  const top = mkdtempSync(join(tmpdir(), 'strata-build-'));
  // Nix's build dir name: `nix-build-<drv name>-<n>`, n = 0 in a fresh parent.
  const buildDir = join(top, `nix-build-${drvName}-0`);
  mkdirSync(buildDir, { mode: 0o700 });
  let scratch: string | undefined;
  const createdInPlace: string[] = [];
  try {
    const { env, files } = builderEnvironment(req.drv, { storeDir: store.storeDir.path, buildDir, cores: options.cores });
    for (const f of files) writeFileSync(join(buildDir, f.name), f.contents, { mode: 0o600 });

    let isolation: Isolation;
    let stagedDir: string;
    if (options.isolation === 'overlay') {
      // Scratch next to the state dir: usually the store's file system, so outputs are renamed, not copied.
      const buildsDir = join(store.stateDir, 'builds');
      mkdirSync(buildsDir, { recursive: true });
      scratch = mkdtempSync(join(buildsDir, `${req.drvPath.hashPart}-`));
      for (const d of ['upper', 'work', 'tmp']) mkdirSync(join(scratch, d));
      stagedDir = join(scratch, 'upper');
      const whiteouts = [...req.outputs.values()].map((p) => p.baseName).filter((b) => exists(join(store.realStoreDir, b)));
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
      // Without a namespace the builder writes into the store itself: clear invalid leftovers
      // first (we hold the locks) and remember what we created, to remove it on failure.
      stagedDir = store.realStoreDir;
      for (const [name, p] of req.outputs) {
        if (req.alreadyValid.has(name)) continue;
        if (exists(store.realPath(p))) removeTree(store.realPath(p));
        createdInPlace.push(store.realPath(p));
      }
      isolation = { kind: 'none' };
    }

    const log = new BuildLog(store.logDir, req.drvPath, options.onLog ? (c) => options.onLog!(req.drvPath, c) : undefined);
    let exit;
    try {
      exit = await runBuilder({ builder: req.drv.builder, args: req.drv.args, env, buildDir, isolation, log, signal: options.signal });
    } finally {
      await log.close();
    }
    const full = store.storeDir.print(req.drvPath);
    if (options.signal?.aborted) {
      throw new StrataError('BUILD_CANCELLED', `Cannot build '${full}': the build was cancelled after another build failed`, { value: full });
    }
    if (exit.code !== 0) {
      const how = exit.code === null ? `was killed by signal ${exit.signal ?? '?'}` : `failed with exit code ${exit.code}`;
      throw new BuildFailure(`Cannot build '${full}': builder ${how}`, log.tailLines(LOG_TAIL_LINES), log.path, full);
    }
    const infos = await checkOutputs(store, {
      drvPath: req.drvPath,
      drv: req.drv,
      outputs: req.outputs,
      alreadyValid: req.alreadyValid,
      stagedDir,
      checkOutside: isolation.kind === 'overlay',
      inputClosure: req.inputClosure,
    });
    await publishOutputs(store, stagedDir, infos);
    createdInPlace.length = 0;
    return infos;
  } finally {
    for (const p of createdInPlace) if (exists(p)) removeTree(p);
    removeTree(top);
    if (scratch !== undefined) removeTree(scratch);
  }
}
