/**
 * The `replit.nix` form: `{ pkgs }: { deps = [ pkgs.a "/nix/store/…" ]; }` and nothing else (see
 * spec.ts). Not a Nix evaluator: a recogniser for one shape, with a precise message for the
 * constructs people write in a real replit.nix that it does not take.
 */
import { type Cursor, showChar, type SpecPosition } from './_cursor.js';
import { isIdentChar, isIdentStart, type SpecDep } from './spec.js';

const NOT_SUPPORTED: Record<string, string> = {
  with: "'with' is not supported: write pkgs.NAME for each dep",
  let: "'let' is not supported: a spec is only '{ pkgs }: { deps = [ … ]; }'",
  rec: "'rec' is not supported: a spec is only '{ pkgs }: { deps = [ … ]; }'",
  inherit: "'inherit' is not supported: write 'deps = [ … ];'",
  import: "'import' is not supported: list the deps in this file",
  if: "'if' is not supported: a spec lists its deps literally",
  assert: "'assert' is not supported: a spec lists its deps literally",
  or: "'or' is not supported: a dep is pkgs.NAME or a store path",
  builtins: "'builtins' is not supported: a dep is pkgs.NAME or a store path",
};

/** Parses a Nix-form spec into its deps. */
export function parseNixSpec(cur: Cursor): SpecDep[] {
  const ws = () => cur.skipSpace({ hash: true, block: true });
  ws();
  expect(cur, '{', "at the start of the spec ('{ pkgs }: { deps = [ … ]; }')");
  ws();
  const arg = cur.here();
  const name = ident(cur);
  if (name !== 'pkgs') {
    throw cur.error(
      name === undefined
        ? `Expected 'pkgs' as the spec's argument, found ${describe(cur)}`
        : `Argument '${name}' is not supported: the spec's argument must be '{ pkgs }'`,
      arg,
    );
  }
  ws();
  if (cur.eat(',')) {
    ws();
    if (!cur.eat('...'))
      throw cur.error(`Expected '...' or '}' after 'pkgs,', found ${describe(cur)}`);
    ws();
  }
  expect(cur, '}', "after '{ pkgs'");
  ws();
  expect(cur, ':', "after '{ pkgs }'");
  ws();
  const word = isIdentStart(cur.peek())
    ? cur.text.slice(cur.pos).match(/^[A-Za-z_][A-Za-z0-9_'-]*/)![0]
    : undefined;
  if (word !== undefined && NOT_SUPPORTED[word]) throw cur.error(NOT_SUPPORTED[word]!);
  expect(cur, '{', "after '{ pkgs }:' (the spec's body is an attribute set)");
  let deps: SpecDep[] | undefined;
  for (;;) {
    ws();
    if (cur.eat('}')) break;
    const at = cur.here();
    const attr = ident(cur);
    if (attr === undefined)
      throw cur.error(`Expected 'deps = [ … ];' or '}', found ${describe(cur)}`);
    if (NOT_SUPPORTED[attr] && attr !== 'builtins' && attr !== 'or')
      throw cur.error(NOT_SUPPORTED[attr]!, at);
    if (attr !== 'deps')
      throw cur.error(`Attribute '${attr}' is not supported: a spec has only 'deps'`, at);
    if (deps !== undefined) throw cur.error("Attribute 'deps' is defined twice", at);
    ws();
    if (cur.peek() === '.')
      throw cur.error("Nested attribute 'deps.…' is not supported: write 'deps = [ … ];'");
    expect(cur, '=', "after 'deps'");
    ws();
    deps = list(cur, ws);
    ws();
    expect(cur, ';', "after the deps list (Nix needs 'deps = [ … ];')");
  }
  ws();
  if (!cur.done) throw cur.error(`Unexpected ${describe(cur)} after the end of the spec`);
  if (deps === undefined) throw cur.error("The spec has no 'deps = [ … ];'", { line: 1, col: 1 });
  return deps;
}

function list(cur: Cursor, ws: () => void): SpecDep[] {
  if (cur.peek() !== '[') {
    const what = describe(cur);
    throw cur.error(
      cur.peek() === '(' || isIdentStart(cur.peek())
        ? `'deps' must be a list literal '[ … ]', found ${what}`
        : `Expected '[' after 'deps =', found ${what}`,
    );
  }
  cur.next();
  const deps: SpecDep[] = [];
  for (;;) {
    ws();
    if (cur.eat(']')) return deps;
    const at = cur.here();
    const c = cur.peek();
    if (c === '"') {
      deps.push(storePathString(cur, at));
    } else if (isIdentStart(c)) {
      const head = ident(cur)!;
      if (head !== 'pkgs') {
        throw cur.error(
          NOT_SUPPORTED[head] ??
            `Unknown variable '${head}': a dep is pkgs.NAME or a store path in quotes (did you mean 'pkgs.${head}'?)`,
          at,
        );
      }
      ws();
      if (cur.peek() !== '.')
        throw cur.error(`Expected '.NAME' after 'pkgs', found ${describe(cur)}`);
      const parts: string[] = [];
      while (cur.peek() === '.') {
        cur.next();
        ws();
        if (cur.peek() === '"' || cur.peek() === '$')
          throw cur.error('Quoted or computed attribute names are not supported: write pkgs.NAME');
        const part = ident(cur);
        if (part === undefined)
          throw cur.error(`Expected an attribute name after 'pkgs.', found ${describe(cur)}`);
        parts.push(part);
        ws();
      }
      if (cur.startsWith('or') && !isIdentChar(cur.peek(2) ?? ' '))
        throw cur.error(NOT_SUPPORTED['or']!);
      deps.push({ kind: 'attr', name: parts.join('.'), pos: at });
    } else if (c === undefined) {
      throw cur.error("Unterminated list: expected ']'");
    } else {
      throw cur.error(unsupportedValue(cur), at);
    }
  }
}

/** A `"…"` string that names a store path. */
function storePathString(cur: Cursor, at: SpecPosition): SpecDep {
  cur.next();
  let value = '';
  for (;;) {
    const c = cur.next();
    if (c === undefined) throw cur.error('Unterminated string', at);
    if (c === '"') break;
    if (c === '$' && cur.peek() === '{')
      throw cur.error(
        "String interpolation '${…}' is not supported: write the store path literally",
      );
    if (c === '\\') {
      const e = cur.next();
      if (e === undefined) throw cur.error('Unterminated string', at);
      value += e === 'n' ? '\n' : e === 't' ? '\t' : e === 'r' ? '\r' : e;
      continue;
    }
    value += c;
  }
  if (!value.startsWith('/')) {
    throw cur.error(
      `String "${value}" is not a store path: write pkgs.${/^[A-Za-z_][A-Za-z0-9_'-]*$/.test(value) ? value : 'NAME'} for a package`,
      at,
    );
  }
  return { kind: 'path', path: value, pos: at };
}

/** Why a value in the list is not taken. */
function unsupportedValue(cur: Cursor): string {
  const c = cur.peek();
  if (c === '/' || cur.startsWith('./') || cur.startsWith('../') || cur.startsWith('~/')) {
    const path = cur.text.slice(cur.pos).match(/^[^\s\]]+/)?.[0] ?? c;
    return `Bare path '${path}' is not supported: quote a store path ("${path}")`;
  }
  if (c === '<') return "Search paths '<…>' are not supported: write pkgs.NAME";
  if (c === '(')
    return 'Parentheses and function calls are not supported: a dep is pkgs.NAME or a store path';
  if (cur.startsWith("''")) return "Indented strings '' … '' are not supported: use \"…\"";
  if (c === '{')
    return 'Attribute sets are not supported in deps: a dep is pkgs.NAME or a store path';
  if (c === '[') return 'Nested lists are not supported in deps';
  if (c !== undefined && /[0-9]/.test(c)) return 'Numbers are not supported in deps';
  return `Unexpected ${describe(cur)} in the deps list`;
}

function ident(cur: Cursor): string | undefined {
  if (!isIdentStart(cur.peek())) return undefined;
  return cur.takeWhile(isIdentChar);
}

function expect(cur: Cursor, s: string, context: string): void {
  if (!cur.eat(s)) throw cur.error(`Expected '${s}' ${context}, found ${describe(cur)}`);
}

/** What is at the cursor, for "found …": a word, a character, or the end. */
function describe(cur: Cursor): string {
  const c = cur.peek();
  if (isIdentStart(c)) {
    let end = cur.pos;
    while (end < cur.text.length && isIdentChar(cur.text[end]!)) end++;
    return `'${cur.text.slice(cur.pos, end)}'`;
  }
  return showChar(c);
}
