/**
 * The builder's environment, exactly as Nix 2.8 sets it up with the sandbox off
 * (formats.md §1; `LocalDerivationGoal::initEnv` and `initTmpDir` in Nix 2.8).
 */
import { availableParallelism } from 'node:os';

import { Hash } from '../core/hash.js';
import { StrataError } from '../core/error.js';
import { type Derivation, isFixedOutput } from '../core/derivation/index.js';

/** Where the build happens and what the machine offers. */
export interface EnvironmentOptions {
  /** The logical store dir (`NIX_STORE`), e.g. `/nix/store`. */
  storeDir: string;
  /** The build directory as the builder sees it (`NIX_BUILD_TOP`, `TMPDIR`, cwd…). */
  buildDir: string;
  /** `NIX_BUILD_CORES`; default: the CPUs of this machine, as Nix's `cores` setting. */
  cores?: number | undefined;
  /** Where impure variables of fixed-output derivations are read from (default `process.env`). */
  hostEnv?: NodeJS.ProcessEnv | undefined;
}

/** A file to write into the build directory before the builder starts (`passAsFile`). */
export interface BuildDirFile {
  /** Base name inside the build dir. */
  name: string;
  contents: string;
}

/** The environment and the files the builder starts with. */
export interface BuilderEnvironment {
  env: Map<string, string>;
  files: BuildDirFile[];
}

/**
 * Computes the builder's environment: Nix's fixed variables, then every derivation env entry
 * (those named in `passAsFile` go through a file in the build dir and `<name>Path`), then for
 * fixed-output derivations the host's values of `impureEnvVars`.
 *
 * @example
 * ```ts
 * const { env } = builderEnvironment(drv, { storeDir: '/nix/store', buildDir: '/tmp/x/nix-build-simple.drv-0' });
 * env.get('HOME') === '/homeless-shelter';
 * ```
 */
export function builderEnvironment(
  drv: Derivation,
  options: EnvironmentOptions,
): BuilderEnvironment {
  if (drv.env.has('__json')) {
    throw new StrataError(
      'UNSUPPORTED',
      `Cannot build '${drv.name}': structured attributes (__json) are not supported yet`,
      { value: drv.name },
    );
  }
  const env = new Map<string, string>();
  // Nix sets PATH to a value that cannot work, so builders spell out every program they use.
  env.set('PATH', '/path-not-set');
  env.set('HOME', '/homeless-shelter');
  env.set('NIX_STORE', options.storeDir);
  env.set('NIX_BUILD_CORES', String(options.cores ?? availableParallelism()));

  const passAsFile = new Set(
    (drv.env.get('passAsFile') ?? '').split(/\s+/).filter((s) => s !== ''),
  );
  const files: BuildDirFile[] = [];
  for (const [k, v] of drv.env) {
    if (!passAsFile.has(k)) {
      env.set(k, v);
      continue;
    }
    // Nix names the file after the nix32 sha256 of the variable name.
    const name = `.attr-${Hash.of('sha256', k).toNix32()}`;
    files.push({ name, contents: v });
    env.set(`${k}Path`, `${options.buildDir}/${name}`);
  }
  for (const k of ['NIX_BUILD_TOP', 'TMPDIR', 'TEMPDIR', 'TMP', 'TEMP', 'PWD'])
    env.set(k, options.buildDir);
  env.set('NIX_LOG_FD', '2');
  env.set('TERM', 'xterm-256color');

  if (isFixedOutput(drv)) {
    // Nix tells fixed-output builders it checks their output (old fetchurl skips its own check).
    env.set('NIX_OUTPUT_CHECKED', '1');
    // Fixed-output builds may see the network and chosen host variables (e.g. proxies); their
    // result is checked against the declared hash anyway.
    const host = options.hostEnv ?? process.env;
    for (const k of (drv.env.get('impureEnvVars') ?? '').split(/\s+/).filter((s) => s !== '')) {
      env.set(k, host[k] ?? '');
    }
  }
  return { env, files };
}
