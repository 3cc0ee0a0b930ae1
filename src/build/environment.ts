/**
 * The builder's environment, exactly as Nix 2.8 sets it up with the sandbox off
 * (formats.md §1; `LocalDerivationGoal::initEnv` and `initTmpDir` in Nix 2.8).
 */
import { availableParallelism } from 'node:os';

import { Hash } from '../core/hash.js';
import { type Derivation, isFixedOutput } from '../core/derivation/index.js';
import {
  dumpJson,
  type JsonValue,
  listAttr,
  structuredAttrsOf,
  structuredAttrsShell,
} from './structured-attrs.js';

/** Where the build happens and what the machine offers. */
export interface EnvironmentOptions {
  /** The logical store dir (`NIX_STORE`), e.g. `/nix/store`. */
  storeDir: string;
  /** The build directory as the builder sees it (`NIX_BUILD_TOP`, `TMPDIR`, cwd…). */
  buildDir: string;
  /** `NIX_BUILD_CORES`; default: the CPUs of this machine, as Nix's `cores` setting. */
  cores?: number | undefined;
  /** Output name → full output path (`outputs` of structured attributes). */
  outputPaths?: Map<string, string> | undefined;
  /** Structured attributes only: the `exportReferencesGraph` results, by key (export-references.ts). */
  exportedGraphs?: { [key: string]: JsonValue } | undefined;
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
 * (those named in `passAsFile` go through a file in the build dir and `<name>Path`) or, with
 * structured attributes, `.attrs.json` and `.attrs.sh` instead, then for fixed-output
 * derivations the host's values of `impureEnvVars`.
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
  const attrs = structuredAttrsOf(drv.env, drv.name);
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
  // With structured attributes the derivation's env reaches the builder only through the files.
  for (const [k, v] of attrs === undefined ? drv.env : []) {
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

  if (attrs !== undefined) {
    const outputs: { [key: string]: JsonValue } = {};
    for (const [name, path] of options.outputPaths ?? []) outputs[name] = path;
    // Nix's order: `outputs` replaced first, then each exported graph under its key.
    const json: { [key: string]: JsonValue } = { ...attrs, outputs, ...options.exportedGraphs };
    files.push({ name: '.attrs.sh', contents: structuredAttrsShell(json) });
    env.set('NIX_ATTRS_SH_FILE', `${options.buildDir}/.attrs.sh`);
    files.push({ name: '.attrs.json', contents: dumpJson(json) });
    env.set('NIX_ATTRS_JSON_FILE', `${options.buildDir}/.attrs.json`);
  }

  if (isFixedOutput(drv)) {
    // Nix tells fixed-output builders it checks their output (old fetchurl skips its own check).
    env.set('NIX_OUTPUT_CHECKED', '1');
    // Fixed-output builds may see the network and chosen host variables (e.g. proxies); their
    // result is checked against the declared hash anyway.
    const host = options.hostEnv ?? process.env;
    for (const k of listAttr(drv.env, attrs, 'impureEnvVars', drv.name)) {
      env.set(k, host[k] ?? '');
    }
  }
  return { env, files };
}
