/**
 * The `.drv` text format: one ATerm `Derive(...)` term, no trailing newline, byte-exact with
 * Nix 2.8 (formats.md §5).
 *
 * The parser is strict, so that every text it accepts prints back to the same bytes except
 * for redundant escapes (`\x` reads as `x`, as in Nix). Nix 2.8 itself also accepts unsorted or
 * duplicate outputs, env keys, inputs and input output names, but it never writes them, and
 * re-sorting would change the text and hence the `.drv` path; so they are rejected here.
 */
import { StrataError } from '../error.js';
import { HASH_SIZES } from '../hash.js';
import { checkName, type StoreDir, type StorePath } from '../store-path.js';
import { type Derivation, type DerivationOutput, isHexDigest, parseOutputHashAlgo } from './types.js';

/** A malformed `.drv`: `code` is `DRV_INVALID`, `offset` the UTF-16 index where parsing stopped. */
export class DerivationParseError extends StrataError {
  readonly offset: number;

  constructor(message: string, offset: number, value: string) {
    super('DRV_INVALID', message, { value });
    this.name = 'DerivationParseError';
    this.offset = offset;
  }
}

/**
 * Compares strings in UTF-8 byte order, which is how Nix (std::map<std::string>) sorts. JS `<`
 * compares UTF-16 units and disagrees for code points above U+FFFF against U+E000..U+FFFF.
 *
 * @example ['b', 'a'].sort(compareUtf8) // ['a', 'b']
 */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      // codePointAt folds a surrogate pair into the code point, whose order is UTF-8's order.
      return (a.codePointAt(i) ?? x) - (b.codePointAt(i) ?? y);
    }
  }
  return a.length - b.length;
}

const ESCAPE_RE = /["\\\n\r\t]/g;
const ESCAPES: Record<string, string> = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function quoteEscaped(s: string): string {
  return `"${s.replace(ESCAPE_RE, (c) => ESCAPES[c]!)}"`;
}

/** Nix writes paths, names, system and hash fields without escaping; refuse what would break. */
function quoteRaw(s: string, what: string): string {
  if (/["\\]/.test(s)) {
    throw new StrataError('DRV_INVALID', `Cannot print derivation ${what} '${s}': it contains a quote or backslash, which Nix does not escape`, {
      value: s,
    });
  }
  return `"${s}"`;
}

/** How {@link printDerivation} deviates from the plain `.drv` text (for hashDerivationModulo). */
export interface PrintDerivationOptions {
  /** Print every output path, and every env var named after an output, as `""`. */
  maskOutputs?: boolean;
  /**
   * Print this list instead of `inputDrvs`: raw key → output names. hashDerivationModulo puts
   * the hex hashes of the inputs here.
   */
  inputDrvsOverride?: ReadonlyMap<string, readonly string[]>;
}

/**
 * Prints the exact `.drv` text Nix 2.8 writes.
 *
 * @example
 * ```ts
 * printDerivation(new StoreDir(), drv)
 * // 'Derive([("out","/nix/store/…-simple","","")],[],[],"x86_64-linux","/bin/sh",[…],[…])'
 * ```
 */
export function printDerivation(storeDir: StoreDir, drv: Derivation, options: PrintDerivationOptions = {}): string {
  const mask = options.maskOutputs === true;
  const parts: string[] = [];
  const outputs = [...drv.outputs.keys()].sort(compareUtf8).map((name) => {
    const o = drv.outputs.get(name)!;
    const path = mask || o.path === undefined ? '' : storeDir.print(o.path);
    return `(${quoteRaw(name, 'output name')},${quoteRaw(path, 'output path')},${quoteRaw(o.hashAlgo ?? '', 'hash algorithm')},${quoteRaw(o.hash ?? '', 'hash')})`;
  });
  parts.push(`[${outputs.join(',')}]`);

  const inputDrvs = options.inputDrvsOverride
    ? [...options.inputDrvsOverride].map(([k, outs]) => [k, outs] as const)
    : [...drv.inputDrvs].map(([base, outs]) => [`${storeDir.path}/${base}`, outs] as const);
  inputDrvs.sort((a, b) => compareUtf8(a[0], b[0]));
  parts.push(
    `[${inputDrvs
      .map(([k, outs]) => `(${quoteRaw(k, 'input derivation')},[${[...outs].sort(compareUtf8).map((o) => quoteRaw(o, 'output name')).join(',')}])`)
      .join(',')}]`,
  );

  const srcs = drv.inputSrcs.map((p) => storeDir.print(p)).sort(compareUtf8);
  parts.push(`[${srcs.map((s) => quoteRaw(s, 'input source')).join(',')}]`);
  parts.push(quoteRaw(drv.system, 'system'));
  parts.push(quoteEscaped(drv.builder));
  parts.push(`[${drv.args.map(quoteEscaped).join(',')}]`);
  const env = [...drv.env.keys()].sort(compareUtf8).map((k) => {
    const v = mask && drv.outputs.has(k) ? '' : drv.env.get(k)!;
    return `(${quoteEscaped(k)},${quoteEscaped(v)})`;
  });
  parts.push(`[${env.join(',')}]`);
  return `Derive(${parts.join(',')})`;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A recursive-descent reader over the `.drv` text; every method throws at the first fault. */
class ATermReader {
  pos = 0;

  constructor(
    readonly text: string,
    readonly storeDir: StoreDir,
  ) {}

  fail(state: string, at = this.pos): never {
    const near = JSON.stringify(this.text.slice(at, at + 20));
    throw new DerivationParseError(`Cannot parse derivation at offset ${at} (near ${near}): ${state}`, at, this.text.slice(0, 200));
  }

  expect(token: string): void {
    if (!this.text.startsWith(token, this.pos)) this.fail(`expected '${token}'`);
    this.pos += token.length;
  }

  /** Consumes `token` when it is next. */
  accept(token: string): boolean {
    if (!this.text.startsWith(token, this.pos)) return false;
    this.pos += token.length;
    return true;
  }

  /** A quoted string; `\n`, `\r`, `\t` are control characters and `\<c>` is `<c>`. */
  string(): string {
    this.expect('"');
    const t = this.text;
    const open = this.pos - 1;
    let out = '';
    for (;;) {
      const q = t.indexOf('"', this.pos);
      if (q < 0) this.fail('unterminated string', open);
      const b = t.indexOf('\\', this.pos);
      if (b < 0 || b > q) {
        out += t.slice(this.pos, q);
        this.pos = q + 1;
        return out;
      }
      out += t.slice(this.pos, b);
      if (b + 1 >= t.length) this.fail('backslash at end of input', b);
      const c = t[b + 1]!;
      out += c === 'n' ? '\n' : c === 'r' ? '\r' : c === 't' ? '\t' : c;
      this.pos = b + 2;
    }
  }

  /** `[item,item,…]` */
  list<T>(item: () => T): T[] {
    this.expect('[');
    const out: T[] = [];
    if (this.accept(']')) return out;
    for (;;) {
      out.push(item());
      if (this.accept(']')) return out;
      if (!this.accept(',')) this.fail(`expected ',' or ']'`);
    }
  }

  storePath(what: string, mustBeDrv = false): StorePath {
    const at = this.pos;
    const s = this.string();
    let p: StorePath;
    try {
      p = this.storeDir.parse(s);
    } catch (e) {
      this.fail(`${what} '${s}' is not a store path (${(e as Error).message})`, at);
    }
    if (mustBeDrv && !p.isDerivation()) this.fail(`${what} '${s}' does not end in '.drv'`, at);
    return p;
  }

  /** Checks strictly increasing order, which also rules out duplicates. */
  sorted(keys: string[], what: string, at: number): void {
    for (let i = 1; i < keys.length; i++) {
      const c = compareUtf8(keys[i - 1]!, keys[i]!);
      if (c === 0) this.fail(`duplicate ${what} '${keys[i]}'`, at);
      if (c > 0) this.fail(`${what} '${keys[i]}' is out of order`, at);
    }
  }
}

function parseOutput(r: ATermReader): [string, DerivationOutput] {
  const at = r.pos;
  r.expect('(');
  const name = r.string();
  if (name === '') r.fail('empty output name', at);
  r.expect(',');
  const pathAt = r.pos;
  const pathText = r.string();
  r.expect(',');
  const hashAlgo = r.string();
  r.expect(',');
  const hash = r.string();
  r.expect(')');
  let path: StorePath | undefined;
  if (pathText !== '') {
    try {
      path = r.storeDir.parse(pathText);
    } catch (e) {
      r.fail(`output path '${pathText}' is not a store path (${(e as Error).message})`, pathAt);
    }
  }
  if (hashAlgo === '') {
    if (hash !== '') r.fail(`output '${name}' has a hash but no hash algorithm`, at);
  } else {
    let algo;
    try {
      algo = parseOutputHashAlgo(hashAlgo).algo;
    } catch {
      r.fail(`output '${name}' has unknown hash algorithm '${hashAlgo}'`, at);
    }
    // '' is a floating content-addressed output and 'impure' an impure one; neither has a path yet.
    if (hash !== '' && hash !== 'impure' && !isHexDigest(hash, algo)) {
      r.fail(`output '${name}' hash '${hash}' is not ${HASH_SIZES[algo] * 2} lowercase hex digits`, at);
    }
  }
  const out: DerivationOutput = { path };
  if (hashAlgo !== '' || hash !== '') {
    out.hashAlgo = hashAlgo;
    out.hash = hash;
  }
  return [name, out];
}

/**
 * Parses the exact `.drv` text. The name is not in the text: pass it (from the `.drv` path,
 * see {@link drvNameFromPath}), or it is taken from env `name`.
 *
 * @throws {DerivationParseError} `DRV_INVALID` with the offset of the first fault.
 * @example
 * ```ts
 * const drv = parseDerivation(new StoreDir(), readFileSync(p), 'simple');
 * printDerivation(new StoreDir(), drv) // the same text
 * ```
 */
export function parseDerivation(storeDir: StoreDir, text: string | Uint8Array, name?: string): Derivation {
  let s: string;
  if (typeof text === 'string') s = text;
  else {
    try {
      s = utf8.decode(text);
    } catch {
      // Strings are held as JS strings; a non-UTF-8 byte could not be printed back unchanged.
      throw new DerivationParseError('Cannot parse derivation: it is not valid UTF-8', 0, '');
    }
  }
  const r: ATermReader = new ATermReader(s, storeDir);
  r.expect('Derive(');

  let at = r.pos;
  const outputList = r.list(() => parseOutput(r));
  if (outputList.length === 0) r.fail('a derivation needs at least one output', at);
  r.sorted(
    outputList.map(([k]) => k),
    'output',
    at,
  );
  r.expect(',');

  at = r.pos;
  const inputDrvList = r.list(() => {
    r.expect('(');
    const p = r.storePath('input derivation', true);
    r.expect(',');
    const outsAt = r.pos;
    const outs = r.list(() => r.string());
    r.sorted(outs, 'input output name', outsAt);
    if (outs.length === 0) r.fail(`input derivation '${p.baseName}' wants no outputs`, outsAt);
    r.expect(')');
    return [p.baseName, outs] as const;
  });
  r.sorted(
    inputDrvList.map(([k]) => `${storeDir.path}/${k}`),
    'input derivation',
    at,
  );
  r.expect(',');

  at = r.pos;
  const inputSrcs = r.list(() => r.storePath('input source'));
  r.sorted(
    inputSrcs.map((p) => storeDir.print(p)),
    'input source',
    at,
  );
  r.expect(',');
  const system = r.string();
  r.expect(',');
  const builder = r.string();
  r.expect(',');
  const args = r.list(() => r.string());
  r.expect(',');

  at = r.pos;
  const envList = r.list(() => {
    r.expect('(');
    const k = r.string();
    r.expect(',');
    const v = r.string();
    r.expect(')');
    return [k, v] as const;
  });
  r.sorted(
    envList.map(([k]) => k),
    'env key',
    at,
  );
  r.expect(')');
  if (r.pos !== s.length) r.fail('trailing bytes after the derivation');

  const env = new Map(envList);
  const drvName = name ?? env.get('name');
  if (drvName === undefined) r.fail('no name given and no env name', 0);
  try {
    checkName(drvName);
  } catch (e) {
    throw new DerivationParseError(`Cannot parse derivation '${drvName}': ${(e as Error).message}`, 0, drvName);
  }
  return {
    name: drvName,
    outputs: new Map(outputList),
    inputDrvs: new Map(inputDrvList.map(([k, v]) => [k, [...v]])),
    inputSrcs,
    system,
    builder,
    args,
    env,
  };
}
