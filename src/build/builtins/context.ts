/** What a built-in builder gets: the derivation's environment, where to write, a log. */
import { StrataError } from '../../core/error.js';

export interface BuiltinContext {
  /** The derivation's environment (`out`, `url`, …), as Nix hands it to the builtin. */
  env: ReadonlyMap<string, string>;
  /** Where the `out` output is written on this machine: a private staging path, absent. */
  target: string;
  /** The logical store dir (`/nix/store`) and where its files are here. */
  storeDir: string;
  realStoreDir: string;
  /** Appends one line to the build log. */
  log: (line: string) => void;
  /** Stops the builtin (an interrupted or cancelled run): a download in progress is dropped. */
  signal?: AbortSignal | undefined;
}

/** An environment entry Nix's builtins require: `attribute 'x' missing` otherwise. */
export function requireAttr(env: ReadonlyMap<string, string>, name: string): string {
  const v = env.get(name);
  if (v === undefined) throw new StrataError('DRV_INVALID', `attribute '${name}' missing`, { value: name });
  return v;
}
