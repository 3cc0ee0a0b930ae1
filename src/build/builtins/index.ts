/**
 * Nix 2.8's built-in builders, run inside strata instead of as a builder process: a derivation
 * whose builder is `builtin:NAME` (Nix's `isBuiltin`). Nix forks and runs them in the build's
 * sandbox; here they write into a private staging dir and their outputs then go through the
 * same checks and registration as any build's.
 */
import { StrataError } from '../../core/error.js';
import { builtinBuildenv } from './buildenv.js';
import type { BuiltinContext } from './context.js';
import { builtinFetchurl } from './fetchurl.js';

export type { BuiltinContext } from './context.js';

/** True for a `builtin:…` builder. */
export function isBuiltinBuilder(builder: string): boolean {
  return builder.startsWith('builtin:');
}

/**
 * Runs the built-in builder `builder`; throws with the builtin's own message (as Nix prints it)
 * when it fails.
 *
 * @example await runBuiltin('builtin:fetchurl', ctx);
 */
export async function runBuiltin(builder: string, ctx: BuiltinContext): Promise<void> {
  switch (builder) {
    case 'builtin:fetchurl':
      return builtinFetchurl(ctx);
    case 'builtin:buildenv':
      return builtinBuildenv(ctx);
    default:
      throw new StrataError('UNSUPPORTED', `unsupported builtin builder '${builder.slice('builtin:'.length)}'`, {
        value: builder,
      });
  }
}
