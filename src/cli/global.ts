/** The global options every command can read (declared in main.ts from {@link GLOBAL_OPTIONS}). */
import type { Command } from 'commander';

/**
 * The global options, as commander flags: main.ts declares them, and `strata env`'s fast path
 * (env-fresh.ts), which runs without commander, reads the same list.
 */
export const GLOBAL_OPTIONS: ReadonlyArray<{ flags: string; description: string }> = [
  { flags: '--store <uri>', description: 'the store to use (default: $STRATA_STORE, else "local")' },
  { flags: '--json', description: 'machine-readable output on stdout' },
  { flags: '-v, --verbose', description: 'more output' },
  { flags: '--quiet', description: 'less output' },
  { flags: '--no-progress', description: 'never draw progress bars' },
  { flags: '--trusted-public-keys <keys>', description: "space-separated 'name:base64' keys to trust" },
  { flags: '--no-require-sigs', description: 'accept unsigned paths from binary caches' },
];

/** The store a command line names: `--store`'s value, else `$STRATA_STORE`, else `local`. */
export function storeOf(option: string | undefined): string {
  return option ?? process.env['STRATA_STORE'] ?? 'local';
}

export interface GlobalOptions {
  store?: string;
  json?: boolean;
  verbose?: boolean;
  quiet?: boolean;
  progress: boolean;
  trustedPublicKeys?: string;
  requireSigs: boolean;
}

/** Walks up to the root program and merges its options with the command's own. */
export function globalOptions(cmd: Command): GlobalOptions {
  let root = cmd;
  while (root.parent) root = root.parent;
  return root.opts<GlobalOptions>();
}

/** The store URI a command uses: `--store`, else `$STRATA_STORE`, else `local`. */
export function storeUri(cmd: Command): string {
  return storeOf(globalOptions(cmd).store);
}

/** The keys `--trusted-public-keys` (else `$STRATA_TRUSTED_PUBLIC_KEYS`) names. */
export function trustedKeys(g: GlobalOptions): string[] {
  return (g.trustedPublicKeys ?? process.env['STRATA_TRUSTED_PUBLIC_KEYS'] ?? '').split(/\s+/).filter((k) => k.length > 0);
}

/** The substituters `--substituter` names (repeatable), then those of `$STRATA_SUBSTITUTERS`. */
export function substitutersOf(option: string[] | undefined): string[] {
  return [...(option ?? []), ...(process.env['STRATA_SUBSTITUTERS'] ?? '').split(/\s+/).filter((s) => s.length > 0)];
}
