/**
 * Differential test against real Nix 2.8: random derivations (escapes, unicode, several
 * outputs, fixed outputs of every mode and algorithm, inputs of inputs, toFile sources) are
 * instantiated by `nix-instantiate` in a throw-away /nix (unshare -m + bind mount, formats.md
 * §1), and every .drv it writes must parse, print back byte for byte, and get the same .drv
 * path and output paths from strata.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';

import {
  computeOutputPaths,
  type Derivation,
  derivationFromJson,
  derivationPath,
  derivationToJson,
  drvNameFromPath,
  maskOutputs,
  parseDerivation,
  printDerivation,
} from '../../src/core/derivation/index.js';
import { StoreDir, type StorePath } from '../../src/core/store-path.js';

const haveNix =
  process.getuid?.() === 0 && spawnSync('nix-instantiate', ['--version']).status === 0 && spawnSync('unshare', ['-m', 'true']).status === 0;

/** A Nix string literal for any text. */
function nixString(s: string): string {
  return `"${s.replace(/[\\"$\n\r\t]/g, (c) => ({ '\\': '\\\\', '"': '\\"', $: '\\$', '\n': '\\n', '\r': '\\r', '\t': '\\t' })[c]!)}"`;
}

const text = fc.string({ unit: fc.constantFrom('a', 'Z', '0', ' ', '"', '\\', '\n', '\r', '\t', '$', '{', 'ü', '😀', '\u00a0'), maxLength: 12 });
const algoSize = { md5: 16, sha1: 20, sha256: 32, sha512: 64 } as const;

interface Spec {
  env: Array<[string, string]>;
  outputs: string[];
  fixed: [mode: 'flat' | 'recursive', algo: keyof typeof algoSize, hex: string] | undefined;
  deps: Array<[index: number, output: number]>;
  srcs: string[];
  args: string[];
}

const spec: fc.Arbitrary<Spec> = fc.record({
  env: fc.uniqueArray(fc.tuple(fc.constantFrom('foo', 'bar', 'baz', 'q1', 'Zed', 'x_y'), text), { maxLength: 4, selector: (t) => t[0] }),
  outputs: fc.constantFrom(['out'], ['out', 'dev'], ['lib', 'out', 'bin'], ['dev', 'out']),
  fixed: fc.option(
    fc.tuple(
      fc.constantFrom('flat' as const, 'recursive' as const),
      fc.constantFrom('md5' as const, 'sha1' as const, 'sha256' as const, 'sha512' as const),
      fc.uint8Array({ minLength: 64, maxLength: 64 }).map((b) => Buffer.from(b).toString('hex')),
    ),
    { nil: undefined },
  ),
  deps: fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 3 }),
  srcs: fc.array(text, { maxLength: 2 }),
  args: fc.array(text, { maxLength: 3 }),
});

function expression(specs: Spec[]): string {
  const lines = specs.map((s, i) => {
    const attrs: string[] = [`name = "d${i}";`, 'system = "x86_64-linux";', 'builder = "/bin/sh";'];
    attrs.push(`args = [ ${s.args.map(nixString).join(' ')} ];`);
    if (s.fixed) {
      const [mode, algo, hex] = s.fixed;
      attrs.push(`outputHashMode = "${mode}";`, `outputHashAlgo = "${algo}";`, `outputHash = "${hex.slice(0, algoSize[algo] * 2)}";`);
    } else attrs.push(`outputs = [ ${s.outputs.map((o) => `"${o}"`).join(' ')} ];`);
    for (const [k, v] of s.env) attrs.push(`${k} = ${nixString(v)};`);
    // Only earlier derivations, so the graph has no cycles.
    const deps = i === 0 ? [] : s.deps.map(([d, o]) => {
      const dep = specs[d % i]!;
      const outs = dep.fixed ? ['out'] : dep.outputs;
      return `\${d${d % i}.${outs[o % outs.length]}}`;
    });
    const srcs = s.srcs.map((t, k) => `\${builtins.toFile "src${i}-${k}" ${nixString(t)}}`);
    attrs.push(`deps = "${[...deps, ...srcs].join(' ')}";`);
    return `  d${i} = derivation { ${attrs.join(' ')} };`;
  });
  return `rec {\n${lines.join('\n')}\n}\n`;
}

describe.skipIf(!haveNix)('derivations instantiated by real nix-instantiate (2.8)', () => {
  const work = mkdtempSync(join(tmpdir(), 'strata-drv-nix-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const specs = fc.sample(spec, { numRuns: 60, seed: 20240601 });
  mkdirSync(join(work, 'nix'));
  mkdirSync(join(work, 'conf'));
  writeFileSync(join(work, 'conf', 'nix.conf'), 'build-users-group =\nsandbox = false\nsubstituters =\n');
  writeFileSync(join(work, 'default.nix'), expression(specs));
  const script = [
    `mount --bind ${work}/nix /nix`,
    `cd ${work}`,
    `NIX_CONF_DIR=${work}/conf XDG_CACHE_HOME=${work}/xdg nix-instantiate default.nix >/dev/null 2>${work}/err || exit 3`,
    `for d in /nix/store/*.drv; do printf '%s\\000' "$d"; cat "$d"; printf '\\000'; done`,
  ].join('\n');
  const run = spawnSync('unshare', ['-m', 'sh', '-c', script], { maxBuffer: 1 << 26 });

  const dir = new StoreDir();
  const drvs = new Map<string, { text: string; drv: Derivation }>();
  const fields = run.stdout.toString('utf8').split('\0');
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const p = dir.parse(fields[i]!);
    drvs.set(p.baseName, { text: fields[i + 1]!, drv: parseDerivation(dir, fields[i + 1]!, drvNameFromPath(p)) });
  }
  const readDrv = (p: StorePath): Derivation => drvs.get(p.baseName)!.drv;

  it('nix-instantiate ran and wrote one .drv per derivation', () => {
    expect(run.status, run.stderr.toString()).toBe(0);
    expect(drvs.size).toBe(specs.length);
    // The sample really exercises inputs, sources, multiple outputs and escapes.
    const all = [...drvs.values()];
    expect(all.filter((d) => d.drv.inputDrvs.size > 0).length).toBeGreaterThan(10);
    expect(all.filter((d) => d.drv.inputSrcs.length > 0).length).toBeGreaterThan(10);
    expect(all.filter((d) => d.drv.outputs.size > 1).length).toBeGreaterThan(3);
    expect(all.filter((d) => /\\[n"\\rt]/.test(d.text)).length).toBeGreaterThan(10);
  });

  it('every .drv prints back byte for byte and has the same .drv path', () => {
    for (const [base, { text, drv }] of drvs) {
      expect(printDerivation(dir, drv)).toBe(text);
      expect(derivationPath(dir, drv).baseName).toBe(base);
    }
  });

  it('every output path computed from the masked derivation matches Nix', () => {
    const cache = new Map();
    let fixed = 0;
    for (const { text, drv } of drvs.values()) {
      if (drv.outputs.get('out')?.hash) fixed++;
      const full = computeOutputPaths(dir, maskOutputs(drv), readDrv, { cache });
      expect(printDerivation(dir, full)).toBe(text);
    }
    expect(fixed).toBeGreaterThan(5);
  });

  it('the JSON form round-trips every .drv', () => {
    for (const { text, drv } of drvs.values()) {
      const j = JSON.parse(JSON.stringify(derivationToJson(dir, drv)));
      expect(printDerivation(dir, derivationFromJson(dir, j, drv.name).derivation)).toBe(text);
    }
  });
});
