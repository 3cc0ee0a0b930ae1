/**
 * The TOML form: `deps = ["hello", "/nix/store/…"]`, written as any TOML writer would (the array
 * may span lines, with comments and a trailing comma; basic or literal strings; the key bare or
 * quoted). A strict subset parser of its own rather than a full TOML library (smol-toml would
 * do the syntax): every dep must keep its line and column for the errors found after parsing,
 * and a full parser would accept tables and keys a spec does not have only to refuse them later
 * without a position. Anything outside the subset is an error naming what is not supported.
 */
import { type Cursor, readHexEscape, showChar } from './_cursor.js';
import { depFromString, type SpecDep } from './spec.js';

const ESCAPES: Record<string, string> = {
  '"': '"',
  '\\': '\\',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

/** Parses a TOML-form spec into its deps. */
export function parseTomlSpec(cur: Cursor): SpecDep[] {
  const line = () => cur.skipSpace({ hash: true, newlines: false });
  const any = () => cur.skipSpace({ hash: true });
  let deps: SpecDep[] | undefined;
  if (cur.peek() === '\uFEFF') cur.next();
  for (;;) {
    any();
    if (cur.done) break;
    const at = cur.here();
    if (cur.peek() === '[')
      throw cur.error("Tables are not supported: a spec is only 'deps = [ … ]'");
    const key = readKey(cur);
    if (key !== 'deps')
      throw cur.error(`Key '${key}' is not supported: a spec has only 'deps'`, at);
    if (deps) throw cur.error("Key 'deps' is defined twice", at);
    line();
    if (cur.peek() === '.') throw cur.error("Dotted keys are not supported: write 'deps = [ … ]'");
    if (!cur.eat('=')) throw cur.error(`Expected '=' after 'deps', found ${showChar(cur.peek())}`);
    line();
    if (cur.peek() !== '[')
      throw cur.error(`'deps' must be an array of strings, found ${showChar(cur.peek())}`);
    deps = array(cur, any);
    line();
    if (!cur.done && cur.peek() !== '\n')
      throw cur.error(
        `Expected the end of the line after the deps array, found ${showChar(cur.peek())}`,
      );
  }
  if (!deps) throw cur.error("The spec has no 'deps = [ … ]'", { line: 1, col: 1 });
  return deps;
}

function readKey(cur: Cursor): string {
  const c = cur.peek();
  if (c === '"' || c === "'") return readString(cur);
  const key = cur.takeWhile((ch) => /[A-Za-z0-9_-]/.test(ch));
  if (key === '') throw cur.error(`Expected a key, found ${showChar(c)}`);
  return key;
}

function array(cur: Cursor, any: () => void): SpecDep[] {
  cur.next();
  const deps: SpecDep[] = [];
  for (;;) {
    any();
    if (cur.eat(']')) return deps;
    const at = cur.here();
    const c = cur.peek();
    if (c !== '"' && c !== "'") {
      throw cur.error(
        c === undefined
          ? "Unterminated array: expected ']'"
          : `Expected a string (a package name or a store path), found ${showChar(c)}`,
      );
    }
    deps.push(depFromString(cur, readString(cur), at));
    any();
    if (cur.eat(']')) return deps;
    if (!cur.eat(',')) throw cur.error(`Expected ',' or ']', found ${showChar(cur.peek())}`);
  }
}

/** A one-line basic (`"…"`, with escapes) or literal (`'…'`) string. */
function readString(cur: Cursor): string {
  const at = cur.here();
  const quote = cur.peek()!;
  if (cur.startsWith(quote.repeat(3)))
    throw cur.error('Multi-line strings are not supported: a dep fits on one line');
  cur.next();
  let value = '';
  for (;;) {
    const escAt = cur.here();
    const c = cur.next();
    if (c === undefined || c === '\n') throw cur.error('Unterminated string', at);
    if (c === quote) return value;
    if (c < ' ' && c !== '\t')
      throw cur.error('Control characters must be escaped in TOML strings');
    if (quote === "'" || c !== '\\') {
      value += c;
      continue;
    }
    const e = cur.next();
    if (e === 'u') value += readHexEscape(cur, 4, escAt);
    else if (e === 'U') value += readHexEscape(cur, 8, escAt);
    else if (e !== undefined && ESCAPES[e] !== undefined) value += ESCAPES[e];
    else throw cur.error(`Invalid escape '\\${e ?? ''}'`, escAt);
  }
}
