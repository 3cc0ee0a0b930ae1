/**
 * Structured attributes (`__structuredAttrs = true`: the derivation's attributes as one JSON
 * value in env `__json`), as Nix 2.8 hands them to the builder: `.attrs.json` (the attributes,
 * `outputs` turned into an object of output paths, exportReferencesGraph results added) and
 * `.attrs.sh` (the bash-representable attributes as `declare` lines), both in the build dir.
 *
 * Nix re-serialises the JSON with nlohmann::json, so the bytes are reproduced here: keys sorted,
 * no spaces, integers exact (JS numbers would round above 2^53), floats in nlohmann's format.
 */
import { StrataError } from '../core/error.js';

/** A JSON number with its literal kept; integers stay exact. */
export class JsonNumber {
  constructor(readonly literal: string) {}
  get isInteger(): boolean {
    return !/[.eE]/.test(this.literal);
  }
  get value(): number {
    return Number(this.literal);
  }
}

export type JsonValue =
  | null
  | boolean
  | string
  | JsonNumber
  | JsonValue[]
  | { [key: string]: JsonValue };

// Sticky: matched where the parser stands, without slicing the text.
const NUMBER = /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
// eslint-disable-next-line no-control-regex
const STRING = /"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;

/** Parses JSON, keeping number literals. Throws `DRV_INVALID` on malformed input. */
export function parseJson(text: string, what: string): JsonValue {
  let i = 0;
  const fail = (why: string): never => {
    throw new StrataError('DRV_INVALID', `Cannot parse the __json attribute of '${what}': ${why} at offset ${i}`, {
      value: what,
    });
  };
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const value = (): JsonValue => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const obj: { [key: string]: JsonValue } = Object.create(null) as { [key: string]: JsonValue };
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a key');
        const k = str();
        ws();
        if (text[i++] !== ':') fail("expected ':'");
        obj[k] = value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') {
          i++;
          return obj;
        } else fail("expected ',' or '}'");
      }
    }
    if (c === '[') {
      i++;
      const arr: JsonValue[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value());
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') {
          i++;
          return arr;
        } else fail("expected ',' or ']'");
      }
    }
    if (c === '"') return str();
    for (const [lit, v] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (text.startsWith(lit, i)) {
        i += lit.length;
        return v;
      }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m === null) return fail('unexpected character');
    i += m[0].length;
    return new JsonNumber(m[0]);
  };
  const str = (): string => {
    STRING.lastIndex = i;
    const m = STRING.exec(text);
    if (m === null) return fail('invalid string');
    i += m[0].length;
    return JSON.parse(m[0]) as string;
  };
  const v = value();
  ws();
  if (i !== text.length) fail('trailing characters');
  return v;
}

/** Keys in the order of nlohmann's std::map: by UTF-8 bytes. */
function sortedKeys(obj: { [key: string]: JsonValue }): string[] {
  return Object.keys(obj).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

/** A string as nlohmann::json dumps it (UTF-8 kept, control characters as \u00xx). */
function dumpString(s: string): string {
  // eslint-disable-next-line no-control-regex
  return `"${s.replace(/["\\\x00-\x1f]/g, (c) => {
    switch (c) {
      case '"':
        return '\\"';
      case '\\':
        return '\\\\';
      case '\b':
        return '\\b';
      case '\f':
        return '\\f';
      case '\n':
        return '\\n';
      case '\r':
        return '\\r';
      case '\t':
        return '\\t';
      default:
        return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
    }
  })}"`;
}

/** A double as nlohmann::json dumps it: shortest digits, `.0` on whole numbers, `e+XX`. */
function dumpFloat(x: number): string {
  if (!Number.isFinite(x)) return 'null';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mant, exp] = Math.abs(x).toExponential().split('e') as [string, string];
  const digits = mant.replace('.', '');
  const k = digits.length;
  const n = Number(exp) + 1; // The decimal point sits after n digits.
  if (k <= n && n <= 15) return `${sign}${digits}${'0'.repeat(n - k)}.0`;
  if (0 < n && n <= 15) return `${sign}${digits.slice(0, n)}.${digits.slice(n)}`;
  if (-4 < n && n <= 0) return `${sign}0.${'0'.repeat(-n)}${digits}`;
  const e = n - 1;
  const es = `${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
  return `${sign}${digits[0]}${k > 1 ? `.${digits.slice(1)}` : ''}e${es}`;
}

/** nlohmann::json's compact `dump()`. */
export function dumpJson(v: JsonValue): string {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'string') return dumpString(v);
  if (v instanceof JsonNumber) {
    if (!v.isInteger) return dumpFloat(v.value);
    const n = BigInt(v.literal);
    // nlohmann holds integers as int64 or uint64; beyond them it parses a double.
    return n >= -(2n ** 63n) && n < 2n ** 64n ? n.toString() : dumpFloat(v.value);
  }
  if (Array.isArray(v)) return `[${v.map(dumpJson).join(',')}]`;
  return `{${sortedKeys(v)
    .map((k) => `${dumpString(k)}:${dumpJson(v[k]!)}`)
    .join(',')}}`;
}

/** Nix's shellEscape: single quotes, `'` as `'\''`. */
function shellEscape(s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`;
}

/** A value bash can hold as one word, as Nix renders it; undefined for anything else. */
function simple(v: JsonValue): string | undefined {
  if (typeof v === 'string') return shellEscape(v);
  if (v instanceof JsonNumber) {
    const f = Math.fround(v.value);
    if (Math.ceil(f) !== f) return undefined;
    // Nix prints `get<int>()`: an integer cut to 32 bits; a double truncated, or INT_MIN
    // (x86's answer) when out of range.
    if (v.isInteger) return BigInt.asIntN(32, BigInt(v.literal)).toString();
    const t = Math.trunc(v.value);
    return String(t >= -(2 ** 31) && t < 2 ** 31 ? t : -(2 ** 31));
  }
  if (v === null) return "''";
  if (typeof v === 'boolean') return v ? '1' : '';
  return undefined;
}

/** The `.attrs.sh` Nix 2.8 writes: one `declare` per bash-representable top-level attribute. */
export function structuredAttrsShell(json: { [key: string]: JsonValue }): string {
  let sh = '';
  for (const key of sortedKeys(json)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) continue;
    const value = json[key]!;
    const s = simple(value);
    if (s !== undefined) {
      sh += `declare ${key}=${s}\n`;
    } else if (Array.isArray(value)) {
      const parts = value.map(simple);
      if (parts.every((p) => p !== undefined)) sh += `declare -a ${key}=(${parts.map((p) => `${p} `).join('')})\n`;
    } else if (isJsonObject(value)) {
      const keys = sortedKeys(value);
      const parts = keys.map((k) => simple(value[k]!));
      if (parts.every((p) => p !== undefined))
        sh += `declare -A ${key}=(${keys.map((k, j) => `[${shellEscape(k)}]=${parts[j]!} `).join('')})\n`;
    }
  }
  return sh;
}

/** A JSON object (not null, a list or a number). */
export function isJsonObject(v: JsonValue | undefined): v is { [key: string]: JsonValue } {
  return v !== undefined && v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof JsonNumber);
}

/**
 * A list-valued attribute (`impureEnvVars`, `requiredSystemFeatures`, …): a JSON list of strings
 * under structured attributes, else the whitespace-separated words of the env entry.
 */
export function listAttr(
  env: ReadonlyMap<string, string>,
  attrs: { [key: string]: JsonValue } | undefined,
  name: string,
  what: string,
): string[] {
  if (attrs !== undefined) return stringsAttr(attrs, name, what) ?? [];
  return (env.get(name) ?? '').split(/\s+/).filter((s) => s !== '');
}

/** The derivation's structured attributes, or undefined when it has none (no `__json`). */
export function structuredAttrsOf(env: Map<string, string>, what: string): { [key: string]: JsonValue } | undefined {
  const text = env.get('__json');
  if (text === undefined) return undefined;
  const v = parseJson(text, what);
  if (!isJsonObject(v)) {
    throw new StrataError('DRV_INVALID', `Cannot build '${what}': its __json attribute is not a JSON object`, {
      value: what,
    });
  }
  return v;
}

/** A structured attribute that must be a list of strings (`impureEnvVars`, the reference checks). */
export function stringsAttr(
  json: { [key: string]: JsonValue },
  name: string,
  what: string,
): string[] | undefined {
  const v = json[name];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    throw new StrataError('DRV_INVALID', `Cannot build '${what}': attribute '${name}' must be a list of strings`, {
      value: name,
    });
  }
  return v as string[];
}
