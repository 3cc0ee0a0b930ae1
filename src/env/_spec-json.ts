/**
 * The JSON form: `{"deps": [ "hello", "/nix/store/…" ]}` or the bare array. A small strict JSON
 * reader of its own (not `JSON.parse`) so that every dep keeps its line and column for the
 * "unknown package" and "not in any layer" messages that come after parsing.
 */
import { type Cursor, readHexEscape, showChar } from './_cursor.js';
import { depFromString, type SpecDep } from './spec.js';

const ESCAPES: Record<string, string> = {
  '"': '"',
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

/** Parses a JSON-form spec into its deps. */
export function parseJsonSpec(cur: Cursor): SpecDep[] {
  const ws = () => cur.skipSpace();
  if (cur.peek() === '\uFEFF') cur.next(); // A byte-order mark, as editors on Windows write.
  ws();
  let deps: SpecDep[];
  if (cur.peek() === '[') {
    deps = array(cur, ws);
  } else if (cur.eat('{')) {
    let found: SpecDep[] | undefined;
    ws();
    if (!cur.eat('}')) {
      for (;;) {
        ws();
        const at = cur.here();
        if (cur.peek() !== '"')
          throw cur.error(`Expected a key in double quotes, found ${showChar(cur.peek())}`);
        const key = string(cur);
        if (key !== 'deps')
          throw cur.error(`Key '${key}' is not supported: a spec has only "deps"`, at);
        if (found) throw cur.error('Key "deps" is given twice', at);
        ws();
        if (!cur.eat(':'))
          throw cur.error(`Expected ':' after "deps", found ${showChar(cur.peek())}`);
        ws();
        if (cur.peek() !== '[')
          throw cur.error(`"deps" must be a list of strings, found ${showChar(cur.peek())}`);
        found = array(cur, ws);
        ws();
        if (cur.eat('}')) break;
        if (!cur.eat(',')) throw cur.error(`Expected ',' or '}', found ${showChar(cur.peek())}`);
      }
    }
    if (!found) throw cur.error('The spec has no "deps" list', { line: 1, col: 1 });
    deps = found;
  } else {
    throw cur.error(`Expected '{"deps": [ … ]}' or '[ … ]', found ${showChar(cur.peek())}`);
  }
  ws();
  if (!cur.done) throw cur.error(`Unexpected ${showChar(cur.peek())} after the end of the spec`);
  return deps;
}

function array(cur: Cursor, ws: () => void): SpecDep[] {
  cur.next();
  const deps: SpecDep[] = [];
  ws();
  if (cur.eat(']')) return deps;
  for (;;) {
    ws();
    const at = cur.here();
    if (cur.peek() !== '"')
      throw cur.error(
        `Expected a string (a package name or a store path), found ${showChar(cur.peek())}`,
      );
    deps.push(depFromString(cur, string(cur), at));
    ws();
    if (cur.eat(']')) return deps;
    if (!cur.eat(',')) throw cur.error(`Expected ',' or ']', found ${showChar(cur.peek())}`);
  }
}

/** A JSON string at the cursor (which is on its opening quote). */
function string(cur: Cursor): string {
  const at = cur.here();
  cur.next();
  let value = '';
  for (;;) {
    const escAt = cur.here();
    const c = cur.next();
    if (c === undefined || c === '\n') throw cur.error('Unterminated string', at);
    if (c === '"') return value;
    if (c < ' ') throw cur.error('Control characters must be escaped in JSON strings');
    if (c !== '\\') {
      value += c;
      continue;
    }
    const e = cur.next();
    if (e === 'u') value += readHexEscape(cur, 4, escAt);
    else if (e !== undefined && ESCAPES[e] !== undefined) value += ESCAPES[e];
    else throw cur.error(`Invalid escape '\\${e ?? ''}'`, escAt);
  }
}
