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
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StrataError';
    this.code = code;
    this.value = options.value;
    this.hint = options.hint;
  }
}

/** True when `e` is a {@link StrataError}, optionally with the given code. */
export function isStrataError(e: unknown, code?: string): e is StrataError {
  return e instanceof StrataError && (code === undefined || e.code === code);
}
