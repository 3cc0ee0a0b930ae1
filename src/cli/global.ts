/** The global options every command can read (declared in main.ts). */
import type { Command } from 'commander';

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
  return globalOptions(cmd).store ?? process.env['STRATA_STORE'] ?? 'local';
}
