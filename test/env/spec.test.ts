import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { isStrataError } from '../../src/core/error.js';
import { findSpecFile, parseSpec, readSpec } from '../../src/env/spec.js';
import { tempDir } from '../support/tmp.js';

const P = '/nix/store/0123456789abcdfghijklmnpqrsvwxyz-tool';

async function deps(text: string, file: string) {
  return (await parseSpec(text, file)).deps.map((d) =>
    d.kind === 'attr'
      ? `attr:${d.name}@${d.pos.line}:${d.pos.col}`
      : `path:${d.path}@${d.pos.line}:${d.pos.col}`,
  );
}

async function error(text: string, file: string): Promise<string> {
  try {
    await parseSpec(text, file);
  } catch (e) {
    if (!isStrataError(e, 'SPEC_INVALID')) throw e;
    expect(e.message).not.toContain('\n');
    return e.message;
  }
  throw new Error(`parsed: ${text}`);
}

describe('parseSpec() on the replit.nix form', () => {
  it('parses deps with comments, whitespace, attribute paths and quoted store paths', async () => {
    const text = `# my project\n{ pkgs }:\n{\n  /* the tools */\n  deps = [\n    pkgs.hello   # greeter\n    pkgs.python3Packages.requests\n\t"${P}" "${P}.drv!out,dev"\n  ];\n}\n`;
    expect(await deps(text, 'replit.nix')).toEqual([
      'attr:hello@6:5',
      'attr:python3Packages.requests@7:5',
      `path:${P}@8:2`,
      `path:${P}.drv!out,dev@8:${3 + P.length + 2}`,
    ]);
  });

  it('accepts { pkgs, ... }:, an empty list and no whitespace at all', async () => {
    expect(await deps('{ pkgs, ... }: { deps = [ ]; }', 'a.nix')).toEqual([]);
    expect(await deps('{pkgs}:{deps=[pkgs.a pkgs.b];}', 'a.nix')).toEqual([
      'attr:a@1:15',
      'attr:b@1:22',
    ]);
  });

  it('refuses what it does not support with file:line:col and the construct', async () => {
    const cases: Array<[string, string]> = [
      [
        '{ pkgs }: with pkgs; { deps = [ hello ]; }',
        "replit.nix:1:11: 'with' is not supported: write pkgs.NAME for each dep",
      ],
      [
        '{ pkgs }:\nlet x = 1; in { deps = []; }',
        "replit.nix:2:1: 'let' is not supported: a spec is only '{ pkgs }: { deps = [ … ]; }'",
      ],
      [
        '{ pkgs }: {\n  deps = [ hello ];\n}',
        "replit.nix:2:12: Unknown variable 'hello': a dep is pkgs.NAME or a store path in quotes (did you mean 'pkgs.hello'?)",
      ],
      [
        '{ pkgs }: { deps = [ (pkgs.python3.withPackages (p: [ p.requests ])) ]; }',
        'replit.nix:1:22: Parentheses and function calls are not supported: a dep is pkgs.NAME or a store path',
      ],
      [
        `{ pkgs }: { deps = [ ${P} ]; }`,
        `replit.nix:1:22: Bare path '${P}' is not supported: quote a store path ("${P}")`,
      ],
      [
        '{ pkgs }: { deps = [ "${pkgs.hello}" ]; }',
        "replit.nix:1:24: String interpolation '${…}' is not supported: write the store path literally",
      ],
      [
        '{ pkgs }: { deps = [ "hello" ]; }',
        'replit.nix:1:22: String "hello" is not a store path: write pkgs.hello for a package',
      ],
      [
        '{ pkgs }: { deps = [ pkgs.hello ]; env = { A = "b"; }; }',
        "replit.nix:1:36: Attribute 'env' is not supported: a spec has only 'deps'",
      ],
      [
        '{ pkgs }: { deps = [ ]; deps = [ ]; }',
        "replit.nix:1:25: Attribute 'deps' is defined twice",
      ],
      [
        '{ pkgs }: { deps = [ pkgs.hello ] }',
        "replit.nix:1:35: Expected ';' after the deps list (Nix needs 'deps = [ … ];'), found '}'",
      ],
      [
        '{ pkgs }: { deps = [ pkgs.hello ];',
        "replit.nix:1:35: Expected 'deps = [ … ];' or '}', found end of file",
      ],
      ['{ pkgs }: { deps = [ pkgs.hello', "replit.nix:1:32: Unterminated list: expected ']'"],
      [
        '{ lib }: { deps = []; }',
        "replit.nix:1:3: Argument 'lib' is not supported: the spec's argument must be '{ pkgs }'",
      ],
      [
        '{ pkgs }: { deps = [ pkgs. ]; }',
        "replit.nix:1:28: Expected an attribute name after 'pkgs.', found ']'",
      ],
      [
        '{ pkgs }: { deps = [ pkgs."a-b" ]; }',
        'replit.nix:1:27: Quoted or computed attribute names are not supported: write pkgs.NAME',
      ],
      [
        '{ pkgs }: { deps = [ pkgs.a or pkgs.b ]; }',
        "replit.nix:1:29: 'or' is not supported: a dep is pkgs.NAME or a store path",
      ],
      [
        '{ pkgs }: { deps = [ <nixpkgs> ]; }',
        "replit.nix:1:22: Search paths '<…>' are not supported: write pkgs.NAME",
      ],
      ['{ pkgs }: { deps = []; } x', "replit.nix:1:26: Unexpected 'x' after the end of the spec"],
      ['{ pkgs }: { /* open', "replit.nix:1:13: Unterminated comment: '/*' is never closed"],
      ['{ pkgs }: { }', "replit.nix:1:1: The spec has no 'deps = [ … ];'"],
      [
        '{ pkgs }: { deps = pkgs.hello; }',
        "replit.nix:1:20: 'deps' must be a list literal '[ … ]', found 'pkgs'",
      ],
      ['{ pkgs }: { deps = [ "/nix/store/x ]; }', 'replit.nix:1:22: Unterminated string'],
      [
        "{ pkgs }: { deps = [ ''a'' ]; }",
        "replit.nix:1:22: Indented strings '' … '' are not supported: use \"…\"",
      ],
    ];
    for (const [text, message] of cases)
      expect(await error(text, 'replit.nix'), text).toBe(message);
  });
});

describe('parseSpec() on the JSON form', () => {
  it('parses {"deps": [...]} and the bare array, with or without pkgs.', async () => {
    expect(await deps(`{\n  "deps": ["hello", "pkgs.gnumake", "${P}"]\n}`, 'strata.json')).toEqual([
      'attr:hello@2:12',
      'attr:gnumake@2:21',
      `path:${P}@2:37`,
    ]);
    expect(await deps(`["a.b", "\\u0068i"]`, 'x.json')).toEqual(['attr:a.b@1:2', 'attr:hi@1:9']);
  });

  it('refuses other keys, non-strings and bad JSON with file:line:col', async () => {
    const cases: Array<[string, string]> = [
      [
        '{"deps": ["hello"], "env": {}}',
        `x.json:1:21: Key 'env' is not supported: a spec has only "deps"`,
      ],
      [
        '{"deps": [1]}',
        "x.json:1:11: Expected a string (a package name or a store path), found '1'",
      ],
      [
        '{"deps": ["hello",]}',
        "x.json:1:19: Expected a string (a package name or a store path), found ']'",
      ],
      [
        '{"deps": ["he llo"]}',
        "x.json:1:11: Invalid dep 'he llo': expected a package name (like 'hello' or 'pkgs.hello') or a store path",
      ],
      ['{"deps": "hello"}', `x.json:1:10: "deps" must be a list of strings, found '"'`],
      ['{}', 'x.json:1:1: The spec has no "deps" list'],
      ['{"deps": ["a"]} []', "x.json:1:17: Unexpected '[' after the end of the spec"],
      ['{"deps": ["\\x"]}', "x.json:1:12: Invalid escape '\\x'"],
      ['{"deps": ["a"', "x.json:1:14: Expected ',' or ']', found end of file"],
    ];
    for (const [text, message] of cases) expect(await error(text, 'x.json'), text).toBe(message);
  });
});

describe('parseSpec() on the TOML form', () => {
  it('parses a multi-line array with comments, both string kinds and a trailing comma', async () => {
    const text = `# deps of my project\n"deps" = [\n  "hello", # the greeter\n  'pkgs.gnumake',\n  "${P}",\n]\n`;
    expect(await deps(text, 'strata.toml')).toEqual([
      'attr:hello@3:3',
      'attr:gnumake@4:3',
      `path:${P}@5:3`,
    ]);
    expect(await deps('deps = []', 'strata.toml')).toEqual([]);
  });

  it('refuses tables, other keys and bad syntax with file:line:col', async () => {
    const cases: Array<[string, string]> = [
      [
        'deps = ["a"]\n[env]\nA = "b"',
        "s.toml:2:1: Tables are not supported: a spec is only 'deps = [ … ]'",
      ],
      ['name = "x"\ndeps = []', "s.toml:1:1: Key 'name' is not supported: a spec has only 'deps'"],
      ['deps = ["a"]\ndeps = ["b"]', "s.toml:2:1: Key 'deps' is defined twice"],
      [
        'deps = ["a"] x',
        "s.toml:1:14: Expected the end of the line after the deps array, found 'x'",
      ],
      ['deps = "a"', "s.toml:1:8: 'deps' must be an array of strings, found '\"'"],
      [
        'deps = [\n  "a",\n  3,\n]',
        "s.toml:3:3: Expected a string (a package name or a store path), found '3'",
      ],
      ['deps.x = []', "s.toml:1:5: Dotted keys are not supported: write 'deps = [ … ]'"],
      [
        'deps = ["""a"""]',
        's.toml:1:9: Multi-line strings are not supported: a dep fits on one line',
      ],
      ['deps = [\n  "a"', "s.toml:2:6: Expected ',' or ']', found end of file"],
      ['', "s.toml:1:1: The spec has no 'deps = [ … ]'"],
    ];
    for (const [text, message] of cases) expect(await error(text, 's.toml'), text).toBe(message);
  });
});

describe('readSpec()', () => {
  it('finds the spec in a directory, picks the format by extension and hashes the bytes', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'strata.toml'), 'deps = ["hello"]\n');
    expect(findSpecFile(dir)).toBe(join(dir, 'strata.toml'));
    const spec = await readSpec(dir);
    expect(spec.format).toBe('toml');
    expect(spec.hash).toMatch(/^[0-9a-f]{64}$/);
    writeFileSync(join(dir, 'replit.nix'), '{ pkgs }: { deps = [ pkgs.hello ]; }');
    expect((await readSpec(dir)).format).toBe('nix');
    await expect(readSpec(join(dir, 'nope.nix'))).rejects.toThrow(
      `Cannot read spec '${join(dir, 'nope.nix')}': it does not exist`,
    );
  });
});
