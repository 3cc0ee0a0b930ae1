/**
 * The one error type strata throws on purpose.
 *
 * Every failure a user can cause or meet has a stable `code` (scripts and tests match on it),
 * the offending value when there is one, and a message that fits on one line:
 * "Cannot <action> '<value>': <state>", sentence case, no trailing period.
 *
 * @example
 * ```ts
 * throw new StrataError('PATH_INVALID', `Cannot parse store path '${p}': hash part is too short`, { value: p });
 * ```
 */
export class StrataError extends Error {
  /** Stable machine-readable reason, e.g. `HASH_MISMATCH`, `NAR_INVALID`, `PATH_INVALID`. */
  readonly code: string;
  /** The input that was rejected, when there is one. */
  readonly value: string | undefined;
  /** What the user can do about it, printed on a second line by the CLI when present. */
  readonly hint: string | undefined;

  constructor(
    code: string,
    message: string,
    options: { value?: string; hint?: string; cause?: unknown } = {},
  ) {
    super(oneLine(message), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StrataError';
    this.code = code;
    this.value = options.value;
    this.hint = options.hint === undefined ? undefined : oneLine(options.hint);
  }
}

/**
 * Messages quote user input (URIs, names, file contents); a newline or other control character
 * in it would split the one-line error (or drive the terminal), so they are shown escaped.
 */
function oneLine(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\t' ? '\\t' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
}

/** True when `e` is a {@link StrataError}, optionally with the given code. */
export function isStrataError(e: unknown, code?: string): e is StrataError {
  return e instanceof StrataError && (code === undefined || e.code === code);
}

/** Nix's own "Path '…' is not valid" (the words `nix-store -q` and `nix path-info` fail with), for `shown`, a printed store path. */
export function pathNotValid(shown: string): StrataError {
  return new StrataError('PATH_NOT_VALID', `Path '${shown}' is not valid`, { value: shown });
}
