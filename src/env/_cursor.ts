/**
 * A position-tracking reader shared by the three spec parsers (Nix, JSON, TOML): every error
 * names `<file>:<line>:<col>` (1-based, columns counted in characters), as compilers do, so an
 * editor can jump to it.
 */
import { StrataError } from '../core/error.js';

/** A place in a spec file. */
export interface SpecPosition {
  /** 1-based line. */
  line: number;
  /** 1-based column, in characters. */
  col: number;
}

/**
 * The one error of a bad spec: `SPEC_INVALID`, message `<file>:<line>:<col>: <what>` on one line.
 *
 * @example specError('replit.nix', { line: 2, col: 3 }, "'with' is not supported")
 */
export function specError(
  file: string,
  pos: SpecPosition,
  what: string,
  code = 'SPEC_INVALID',
): StrataError {
  return new StrataError(code, `${file}:${pos.line}:${pos.col}: ${what}`, { value: file });
}

/** Shows one character for a message: `'x'`, or a name for invisible ones. */
export function showChar(c: string | undefined): string {
  if (c === undefined) return 'end of file';
  if (c === '\n') return 'end of line';
  if (c === '\t') return 'a tab';
  return `'${c}'`;
}

/** A cursor over the text of a spec. */
export class Cursor {
  readonly file: string;
  readonly text: string;
  pos = 0;
  private line = 1;
  private lineStart = 0;

  constructor(file: string, text: string) {
    this.file = file;
    this.text = text;
  }

  get done(): boolean {
    return this.pos >= this.text.length;
  }

  /** The character at the cursor (plus `ahead`), or undefined at the end. */
  peek(ahead = 0): string | undefined {
    return this.text[this.pos + ahead];
  }

  startsWith(s: string): boolean {
    return this.text.startsWith(s, this.pos);
  }

  /** Consumes one character, keeping line and column. */
  next(): string | undefined {
    const c = this.text[this.pos];
    if (c === undefined) return undefined;
    this.pos++;
    if (c === '\n') {
      this.line++;
      this.lineStart = this.pos;
    }
    return c;
  }

  /** Consumes `s` if it comes next. */
  eat(s: string): boolean {
    if (!this.startsWith(s)) return false;
    for (let i = 0; i < s.length; i++) this.next();
    return true;
  }

  /** Where the cursor is. */
  here(): SpecPosition {
    return { line: this.line, col: this.pos - this.lineStart + 1 };
  }

  /** An error at `pos` (default: here). */
  error(what: string, pos: SpecPosition = this.here()): StrataError {
    return specError(this.file, pos, what);
  }

  /** Consumes characters while `test` holds; returns them. */
  takeWhile(test: (c: string) => boolean): string {
    const start = this.pos;
    while (!this.done && test(this.text[this.pos]!)) this.next();
    return this.text.slice(start, this.pos);
  }

  /**
   * Skips blanks and comments. `hash` enables `# …` line comments, `block` enables `/* … *\/`;
   * `newlines: false` stops at a newline (TOML's key = value lines).
   */
  skipSpace(options: { hash?: boolean; block?: boolean; newlines?: boolean } = {}): void {
    const newlines = options.newlines ?? true;
    for (;;) {
      const c = this.peek();
      if (c === ' ' || c === '\t' || c === '\r' || (newlines && c === '\n')) {
        this.next();
      } else if (options.hash && c === '#') {
        while (!this.done && this.peek() !== '\n') this.next();
      } else if (options.block && this.startsWith('/*')) {
        const at = this.here();
        this.eat('/*');
        while (!this.done && !this.startsWith('*/')) this.next();
        if (!this.eat('*/')) throw this.error("Unterminated comment: '/*' is never closed", at);
      } else {
        return;
      }
    }
  }
}

/** `\uXXXX` (and TOML's `\UXXXXXXXX`) escapes: the code point, or an error. */
export function readHexEscape(cur: Cursor, digits: number, at: SpecPosition): string {
  let hex = '';
  for (let i = 0; i < digits; i++) {
    const c = cur.peek();
    if (c === undefined || !/[0-9a-fA-F]/.test(c))
      throw cur.error(`Invalid escape: expected ${digits} hex digits`, at);
    hex += cur.next();
  }
  const code = parseInt(hex, 16);
  if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
    throw cur.error(`Invalid escape: '${hex}' is not a Unicode scalar value`, at);
  return String.fromCodePoint(code);
}
