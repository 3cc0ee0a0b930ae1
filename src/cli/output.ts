/** How the CLI shows errors and results; the only place that knows about the terminal. */
import { isStrataError } from '../core/error.js';

/** A usage error found after commander parsed the arguments (exit 2). */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** One clear line (plus a hint line when there is one) for any error. */
export function renderError(e: unknown): string {
  if (isStrataError(e)) return `error: ${e.message}\n${e.hint ? `hint: ${e.hint}\n` : ''}`;
  if (e instanceof UsageError) return `error: ${e.message}\n`;
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    if (process.env['STRATA_DEBUG']) return `${e.stack ?? e.message}\n`;
    return `error: ${e.message}${code && !e.message.includes(code) ? ` (${code})` : ''}\n`;
  }
  return `error: ${String(e)}\n`;
}

export function exitCodeFor(e: unknown): number {
  if (e instanceof UsageError) return 2;
  // `strata shell -- CMD` that cannot run CMD exits as a shell would (and as it does inside a
  // mount namespace, where a shell's `exec` runs it).
  if (isStrataError(e, 'SHELL_COMMAND_NOT_FOUND')) return 127;
  if (isStrataError(e, 'SHELL_COMMAND_NOT_EXECUTABLE')) return 126;
  return 1;
}

/** Writes a string to stdout and waits for it to drain (large outputs piped to `head` etc.). */
export function print(line: string): void {
  process.stdout.write(line.endsWith('\n') ? line : `${line}\n`);
}

/**
 * Writes the `--json` output: one line of JSON and no newline after it, byte for byte as Nix 2.8
 * prints its own (`nix path-info --json`, `nix eval --json`, `nix store ls --json`).
 */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value));
}

/** Bytes for people: `512 B`, `1.5 MiB` (binary units, one decimal). */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/**
 * A size column of `nix path-info -s/-S`: the number right-aligned in 11 columns, or with `-h`
 * scaled by 1024 while above 1024, one decimal, in 6 columns, then a unit letter (a space for
 * bytes), as Nix's `%6.1f%c`.
 */
export function formatNixSize(n: number, human: boolean): string {
  if (!human) return String(n).padStart(11);
  const units = ' KMGTPEZY';
  let power = 0;
  let v = n;
  while (v > 1024 && power < units.length - 1) {
    v /= 1024;
    power++;
  }
  // printf rounds an exact tie (x.x5, which division by 1024 makes common) to even; toFixed up.
  let tenths = Math.round(v * 10);
  if (Number.isInteger(v * 20) && !Number.isInteger(v * 10)) tenths = Math.floor(v * 10) % 2 === 0 ? Math.floor(v * 10) : Math.ceil(v * 10);
  return `${(tenths / 10).toFixed(1).padStart(6)}${units[power]}`;
}
