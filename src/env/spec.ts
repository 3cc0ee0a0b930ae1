/**
 * Environment specs: what a project needs, in one of three forms with the same content.
 *
 * **Nix** (`replit.nix`, `*.nix`) — exactly this shape, with any whitespace and `#`/`/* *\/`
 * comments:
 * ```nix
 * { pkgs }: {
 *   deps = [ pkgs.hello pkgs.python3Packages.requests "/nix/store/…-tool" "/nix/store/…-x.drv" ];
 * }
 * ```
 * `{ pkgs, ... }:` is accepted too. A dep is `pkgs.NAME` (NAME may be an attribute path,
 * `a.b.c`, looked up as that whole string in the package index) or a double-quoted store path.
 * Everything else is refused with `<file>:<line>:<col>: …` naming what is not supported: `with`,
 * `let`, `rec`, `inherit`, function calls, parentheses, interpolation, other attributes (`env`),
 * and **bare paths** (`/nix/store/…` unquoted): in Nix a path literal means "copy this file into
 * the store", not "this store object", so a store path must be written as a string.
 *
 * **JSON** (`*.json`): `{"deps": ["hello", "pkgs.gnumake", "/nix/store/…"]}` or just the array.
 * **TOML** (`*.toml`): `deps = ["hello", "/nix/store/…"]` (a strict subset, see `_spec-toml.ts`).
 * In both, a string starting with `/` is a store path and anything else a package name, with or
 * without the `pkgs.` prefix.
 *
 * A store path may be a `.drv`; `DRV!out,dev` picks outputs (Nix 2.8's installable syntax),
 * without `!` every output of the derivation is used.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';

import { StrataError } from '../core/error.js';
import type { Cursor, SpecPosition } from './_cursor.js';

/** A spec's syntax. */
export type SpecFormat = 'nix' | 'json' | 'toml';

/** One dependency as written, with where it was written. */
export type SpecDep =
  | {
      kind: 'attr';
      /** Attribute path without `pkgs.`: `hello`, `python3Packages.requests`. */ name: string;
      pos: SpecPosition;
    }
  | {
      kind: 'path';
      /** As written: `/nix/store/…`, maybe `….drv!out`. */ path: string;
      pos: SpecPosition;
    };

/** A parsed spec. */
export interface EnvSpec {
  /** The file as named by the caller (used in messages). */
  file: string;
  format: SpecFormat;
  deps: SpecDep[];
  /** sha256 (hex) of the file's bytes: what the cache compares. */
  hash: string;
}

/** File names looked for when `SPEC` is a directory, in this order. */
export const SPEC_FILE_NAMES = ['replit.nix', 'strata.nix', 'strata.toml', 'strata.json'] as const;

// An attribute path of Nix identifiers (Nix's ID token: [a-zA-Z_][a-zA-Z0-9_'-]*).
const ATTR_PATH = /^[A-Za-z_][A-Za-z0-9_'-]*(?:\.[A-Za-z_][A-Za-z0-9_'-]*)*$/;

/** The format of a spec file, from its extension (`.json`, `.toml`; anything else is Nix). */
export function specFormatOf(file: string): SpecFormat {
  const ext = extname(file).toLowerCase();
  return ext === '.json' ? 'json' : ext === '.toml' ? 'toml' : 'nix';
}

/** sha256 (hex) of spec bytes, as recorded in the cache. */
export function specHash(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Finds the spec file: `spec` itself, or the first of {@link SPEC_FILE_NAMES} in it when it is a
 * directory.
 *
 * @example findSpecFile('.') // './replit.nix'
 */
export function findSpecFile(spec: string): string {
  let st;
  try {
    st = statSync(spec);
  } catch {
    throw new StrataError('SPEC_MISSING', `Cannot read spec '${spec}': it does not exist`, {
      value: spec,
    });
  }
  if (!st.isDirectory()) return spec;
  for (const name of SPEC_FILE_NAMES) if (existsSync(join(spec, name))) return join(spec, name);
  throw new StrataError(
    'SPEC_MISSING',
    `Cannot find a spec in '${spec}': none of ${SPEC_FILE_NAMES.join(', ')} exists`,
    { value: spec },
  );
}

/**
 * Parses spec text. Throws `SPEC_INVALID` with `<file>:<line>:<col>: <what>` on anything outside
 * the supported shape.
 *
 * @example
 * ```ts
 * parseSpec('{ pkgs }: { deps = [ pkgs.hello ]; }', 'replit.nix').deps
 * // [{ kind: 'attr', name: 'hello', pos: { line: 1, col: 21 } }]
 * ```
 */
export async function parseSpec(
  text: string,
  file: string,
  format: SpecFormat = specFormatOf(file),
): Promise<EnvSpec> {
  // The parsers are loaded on demand: a fresh cache never needs one.
  const { Cursor } = await import('./_cursor.js');
  const cur = new Cursor(file, text);
  let deps: SpecDep[];
  if (format === 'nix') deps = (await import('./_spec-nix.js')).parseNixSpec(cur);
  else if (format === 'json') deps = (await import('./_spec-json.js')).parseJsonSpec(cur);
  else deps = (await import('./_spec-toml.js')).parseTomlSpec(cur);
  return { file, format, deps, hash: specHash(text) };
}

/**
 * Reads and parses a spec file (or the spec in a directory).
 *
 * @example const spec = await readSpec('replit.nix');
 */
export async function readSpec(spec: string): Promise<EnvSpec> {
  const file = findSpecFile(spec);
  const bytes = readFileSync(file);
  const text = bytes.toString('utf8');
  if (Buffer.compare(Buffer.from(text, 'utf8'), bytes) !== 0) {
    throw new StrataError('SPEC_INVALID', `Cannot read spec '${file}': it is not valid UTF-8`, {
      value: file,
    });
  }
  return parseSpec(text, file, specFormatOf(basename(file)));
}

/**
 * A JSON/TOML dep string → a dep: `/…` is a store path, anything else a package name (an
 * optional `pkgs.` prefix is dropped).
 */
export function depFromString(cur: Cursor, value: string, pos: SpecPosition): SpecDep {
  if (value.startsWith('/')) return { kind: 'path', path: value, pos };
  const name = value.startsWith('pkgs.') ? value.slice('pkgs.'.length) : value;
  if (!ATTR_PATH.test(name)) {
    throw cur.error(
      `Invalid dep '${value}': expected a package name (like 'hello' or 'pkgs.hello') or a store path`,
      pos,
    );
  }
  return { kind: 'attr', name, pos };
}

/** True for a Nix identifier start character. */
export function isIdentStart(c: string | undefined): boolean {
  return c !== undefined && /[A-Za-z_]/.test(c);
}

/** True for a Nix identifier character. */
export function isIdentChar(c: string): boolean {
  return /[A-Za-z0-9_'-]/.test(c);
}
