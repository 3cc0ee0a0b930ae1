import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import {
  computeOutputPaths,
  type Derivation,
  derivationFromJson,
  derivationPath,
  DerivationParseError,
  derivationToJson,
  drvNameFromPath,
  drvReferences,
  hashDerivationModulo,
  isFixedOutput,
  maskOutputs,
  parseDerivation,
  printDerivation,
} from '../../src/core/derivation/index.js';
import { showDerivations } from '../../src/core/derivation/json.js';
import { isStrataError } from '../../src/core/error.js';
import { Hash } from '../../src/core/hash.js';
import { StoreDir, StorePath } from '../../src/core/store-path.js';
import { loadVector } from '../support/vectors.js';

const vec = loadVector('derivations.json');
const dir = new StoreDir();

interface Case {
  attr: string;
  drv_path: string;
  drv_aterm: string;
  show_derivation: Record<string, unknown> & { outputs: Record<string, { path: string; hashAlgo?: string; hash?: string }> };
  outputs: Record<string, string>;
  drv_db_row: { references: string[]; derivationOutputs: Record<string, string>; ca: string };
}
const cases: Case[] = vec.cases;

/** Every .drv in the vector file, parsed from its ATerm, by base name: the readDrv callback. */
const byBase = new Map<string, Derivation>();
for (const c of cases) {
  const p = dir.parse(c.drv_path);
  byBase.set(p.baseName, parseDerivation(dir, c.drv_aterm, drvNameFromPath(p)));
}
const readDrv = (p: StorePath): Derivation => {
  const d = byBase.get(p.baseName);
  if (d === undefined) throw new Error(`no vector for ${p.baseName}`);
  return d;
};

describe('derivations.json: every case', () => {
  it('has the 15 cases the spec promises', () => {
    expect(cases.length).toBe(15);
  });

  for (const c of cases) {
    describe(c.attr, () => {
      const drvPath = dir.parse(c.drv_path);
      const name = drvNameFromPath(drvPath);

      it('parseDerivation() then printDerivation() gives the identical bytes', () => {
        const drv = parseDerivation(dir, Buffer.from(c.drv_aterm, 'utf8'), name);
        expect(drv.name).toBe(name);
        expect(printDerivation(dir, drv)).toBe(c.drv_aterm);
      });

      it('derivationPath() is the recorded drv_path', () => {
        expect(dir.print(derivationPath(dir, parseDerivation(dir, c.drv_aterm, name)))).toBe(c.drv_path);
      });

      it('the name falls back to env name when the path is not known', () => {
        expect(parseDerivation(dir, c.drv_aterm).name).toBe(name);
      });

      it('computeOutputPaths() on the masked JSON form gives the recorded outputs and ATerm', () => {
        const fromJson = derivationFromJson(dir, c.show_derivation, name).derivation;
        const masked = maskOutputs(fromJson);
        for (const o of masked.outputs.values()) expect(o.path).toBeUndefined();
        const full = computeOutputPaths(dir, masked, readDrv);
        const got = Object.fromEntries([...full.outputs].map(([k, o]) => [k, dir.print(o.path!)]));
        expect(got).toEqual(c.outputs);
        for (const [k, p] of Object.entries(c.outputs)) expect(full.env.get(k)).toBe(p);
        expect(printDerivation(dir, full)).toBe(c.drv_aterm);
        expect(dir.print(derivationPath(dir, full))).toBe(c.drv_path);
      });

      it('JSON round trip: show_derivation → Derivation → ATerm and back to the same JSON', () => {
        const { derivation, format } = derivationFromJson(dir, c.show_derivation, name);
        expect(format).toBe('v1');
        expect(printDerivation(dir, derivation)).toBe(c.drv_aterm);
        expect(JSON.stringify(derivationToJson(dir, parseDerivation(dir, c.drv_aterm, name)))).toBe(JSON.stringify(c.show_derivation));
        // With the outer drv-path key, the name comes from the key.
        const outer = derivationFromJson(dir, { [c.drv_path]: c.show_derivation });
        expect(outer.derivation.name).toBe(name);
        expect(printDerivation(dir, outer.derivation)).toBe(c.drv_aterm);
        expect(showDerivations(dir, [derivation])).toEqual({ [c.drv_path]: c.show_derivation });
      });

      it('JSON in the newer forms (name, method split, structured inputDrvs, base names) gives the same ATerm', () => {
        const sd = c.show_derivation as unknown as {
          outputs: Record<string, { path: string; hashAlgo?: string; hash?: string }>;
          inputDrvs: Record<string, string[]>;
          inputSrcs: string[];
        };
        const outputs = Object.fromEntries(
          Object.entries(sd.outputs).map(([k, o]) => {
            if (!o.hashAlgo) return [k, { path: o.path }];
            const method = o.hashAlgo.startsWith('r:') ? 'nar' : 'flat';
            const algo = o.hashAlgo.replace(/^r:/, '');
            return [k, { path: o.path, method, hashAlgo: algo, hash: o.hash }];
          }),
        );
        const v2 = {
          ...c.show_derivation,
          name,
          outputs,
          inputDrvs: Object.fromEntries(Object.entries(sd.inputDrvs).map(([k, v]) => [k, { outputs: v, dynamicOutputs: {} }])),
        };
        const r2 = derivationFromJson(dir, { [c.drv_path]: v2 });
        expect(r2.format).toBe('v2');
        expect(printDerivation(dir, r2.derivation)).toBe(c.drv_aterm);

        const base = (p: string) => p.slice('/nix/store/'.length);
        const v3 = {
          ...v2,
          version: 3,
          outputs: Object.fromEntries(Object.entries(outputs).map(([k, o]) => [k, { ...o, path: base(o.path) }])),
          inputSrcs: sd.inputSrcs.map(base),
          inputDrvs: Object.fromEntries(Object.entries(v2.inputDrvs).map(([k, v]) => [base(k), v])),
        };
        const r3 = derivationFromJson(dir, v3);
        expect(r3.format).toBe('v3');
        expect(printDerivation(dir, r3.derivation)).toBe(c.drv_aterm);

        const { inputSrcs, inputDrvs, ...rest } = v3;
        const v4 = {
          ...rest,
          version: 4,
          inputs: { srcs: inputSrcs, drvs: inputDrvs },
          // v4 prints fixed-output hashes in SRI form.
          outputs: Object.fromEntries(
            Object.entries(v3.outputs as Record<string, { path: string; hashAlgo?: string; hash?: string }>).map(([k, o]) => [
              k,
              o.hash ? { ...o, hash: new Hash(o.hashAlgo as 'sha256', Buffer.from(o.hash, 'hex')).toSri() } : o,
            ]),
          ),
        };
        const r4 = derivationFromJson(dir, v4);
        expect(r4.format).toBe('v4');
        expect(printDerivation(dir, r4.derivation)).toBe(c.drv_aterm);
      });

      it('the DB row of the .drv: references, DerivationOutputs and text CA', () => {
        const drv = parseDerivation(dir, c.drv_aterm, name);
        expect(drvReferences(drv).map((p) => dir.print(p))).toEqual(c.drv_db_row.references);
        expect(Object.fromEntries([...drv.outputs].map(([k, o]) => [k, dir.print(o.path!)]))).toEqual(c.drv_db_row.derivationOutputs);
        expect(c.drv_db_row.ca).toBe(`text:sha256:${Hash.of('sha256', c.drv_aterm).toNix32()}`);
      });
    });
  }
});

describe('hashDerivationModulo()', () => {
  it('maps a fixed-output derivation to its declared content, ignoring the builder', () => {
    const c = cases.find((x) => x.attr === 'fixedFlat')!;
    const drv = parseDerivation(dir, c.drv_aterm, 'fixed-flat.txt');
    expect(isFixedOutput(drv)).toBe(true);
    const other = { ...drv, builder: '/bin/other', args: ['x'] };
    expect(hashDerivationModulo(dir, other, readDrv)).toEqual(hashDerivationModulo(dir, drv, readDrv));
  });

  it('reads each input once when given a shared cache', () => {
    const reads: string[] = [];
    const cache = new Map();
    const counting = (p: StorePath) => {
      reads.push(p.baseName);
      return readDrv(p);
    };
    for (const attr of ['refs', 'chain3', 'dependent']) {
      const c = cases.find((x) => x.attr === attr)!;
      hashDerivationModulo(dir, parseDerivation(dir, c.drv_aterm), counting, { cache });
    }
    expect(new Set(reads).size).toBe(reads.length);
  });
});

// ---------------------------------------------------------------------------------------------
// Property: random derivations print → parse → print identical.

const nix32 = fc.constantFrom(...'0123456789abcdfghijklmnpqrsvwxyz');
const hashPart = fc.array(nix32, { minLength: 32, maxLength: 32 }).map((a) => a.join(''));
const nameChars = fc.constantFrom(...'abcxyzABZ0129+-._?=');
const pathName = fc.array(nameChars, { minLength: 1, maxLength: 12 }).map((a) => a.join(''));
const storePath = fc.tuple(hashPart, pathName).map(([h, n]) => StorePath.fromBaseName(`${h}-${n}`));
const drvPathArb = fc.tuple(hashPart, pathName).map(([h, n]) => StorePath.fromBaseName(`${h}-${n}.drv`));
// Anything, including the escaped characters, quotes, backslashes, unicode and astral planes.
const text = fc.string({ unit: fc.oneof(fc.constantFrom('"', '\\', '\n', '\r', '\t', 'ü', '😀', '\uE000'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), maxLength: 30 });
const outName = fc.oneof(fc.array(fc.constantFrom(...'abcdefgo'), { minLength: 1, maxLength: 5 }).map((a) => a.join('')), fc.constant('__proto__'));

const derivationArb: fc.Arbitrary<Derivation> = fc
  .record({
    name: pathName,
    outputs: fc.uniqueArray(fc.tuple(outName, fc.option(storePath, { nil: undefined })), { minLength: 1, maxLength: 4, selector: (t) => t[0] }),
    fixed: fc.option(
      fc.tuple(fc.constantFrom('', 'r:', 'text:'), fc.constantFrom('md5', 'sha1', 'sha256', 'sha512') as fc.Arbitrary<'sha256'>, fc.uint8Array({ minLength: 64, maxLength: 64 })),
      { nil: undefined },
    ),
    inputDrvs: fc.uniqueArray(fc.tuple(drvPathArb, fc.uniqueArray(outName, { minLength: 1, maxLength: 3 })), { maxLength: 4, selector: (t) => t[0].baseName }),
    inputSrcs: fc.uniqueArray(storePath, { maxLength: 4, selector: (p) => p.baseName }),
    system: fc.string({ unit: fc.constantFrom(...'abc_-64xyz'), maxLength: 20 }),
    builder: text,
    args: fc.array(text, { maxLength: 5 }),
    env: fc.uniqueArray(fc.tuple(text, text), { maxLength: 8, selector: (t) => t[0] }),
  })
  .map((r) => {
    const outputs = new Map(r.outputs.map(([k, p]) => [k, { path: p }]));
    if (r.fixed) {
      const [prefix, algo, bytes] = r.fixed;
      const size = { md5: 16, sha1: 20, sha256: 32, sha512: 64 }[algo];
      outputs.clear();
      outputs.set('out', { path: r.outputs[0]![1], hashAlgo: prefix + algo, hash: Buffer.from(bytes.slice(0, size)).toString('hex') } as never);
    }
    return {
      name: r.name,
      outputs,
      inputDrvs: new Map(r.inputDrvs.map(([p, outs]) => [p.baseName, [...outs].sort()])),
      inputSrcs: r.inputSrcs,
      system: r.system,
      builder: r.builder,
      args: r.args,
      env: new Map(r.env),
    };
  });

describe('ATerm properties', () => {
  it('printDerivation ∘ parseDerivation ∘ printDerivation is the identity on text', () => {
    fc.assert(
      fc.property(derivationArb, (drv) => {
        const a = printDerivation(dir, drv);
        const parsed = parseDerivation(dir, a, drv.name);
        expect(printDerivation(dir, parsed)).toBe(a);
        expect(parsed.env).toEqual(drv.env);
        expect(parsed.args).toEqual(drv.args);
        expect(parsed.builder).toBe(drv.builder);
      }),
      { numRuns: 500 },
    );
  });

  it('JSON round trip keeps the ATerm', () => {
    fc.assert(
      fc.property(derivationArb, (drv) => {
        const a = printDerivation(dir, drv);
        const j = JSON.parse(JSON.stringify(derivationToJson(dir, drv)));
        expect(printDerivation(dir, derivationFromJson(dir, j, drv.name).derivation)).toBe(a);
      }),
      { numRuns: 500 },
    );
  });

  it('a redundant escape (\\x) reads as x, as in Nix', () => {
    const drv = parseDerivation(dir, 'Derive([("out","","","")],[],[],"s","\\a\\b",[],[("name","n\\q")])');
    expect(drv.builder).toBe('ab');
    expect(drv.env.get('name')).toBe('nq');
  });
});

// ---------------------------------------------------------------------------------------------
// Malformed input: each gives DRV_INVALID (and an offset).

const simple = cases.find((c) => c.attr === 'simple')!.drv_aterm;
const dependent = cases.find((c) => c.attr === 'dependent')!.drv_aterm;
const multi = cases.find((c) => c.attr === 'multi')!.drv_aterm;
const P = '/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple';
const malformed: Array<[string, string | Uint8Array, RegExp]> = [
  ['empty input', '', /expected 'Derive\('/],
  ['another term', simple.replace('Derive(', 'Derivx('), /expected 'Derive\('/],
  ['truncated anywhere', simple.slice(0, 100), /./],
  ['unterminated string', 'Derive([("out', /unterminated string/],
  ['backslash at the end', 'Derive([("out\\', /unterminated string|backslash/],
  ['missing comma between lists', simple.replace('],[],[],"x86', '][],[],"x86'), /expected ','/],
  ['missing comma in a list', simple.replace('"-c","echo', '"-c" "echo'), /expected ',' or '\]'/],
  ['missing closing bracket', simple.replace(',"echo hello > $out"]', ',"echo hello > $out"'), /expected/],
  ['missing closing paren', simple.slice(0, -1), /expected '\)'/],
  ['trailing newline', `${simple}\n`, /trailing bytes/],
  ['trailing garbage', `${simple}x`, /trailing bytes/],
  ['unsorted env keys', simple.replace('("builder","/bin/sh"),("name","simple")', '("name","simple"),("builder","/bin/sh")'), /env key 'builder' is out of order/],
  ['duplicate env keys', simple.replace('("name","simple")', '("builder","/bin/sh")'), /duplicate env key/],
  ['unsorted outputs', multi.replace(/^Derive\(\[(\("dev"[^)]*\)),(\("lib"[^)]*\))/, 'Derive([$2,$1'), /output 'dev' is out of order/],
  ['duplicate outputs', simple.replace(/^Derive\(\[(\([^)]*\))\]/, 'Derive([$1,$1]'), /duplicate output/],
  ['no outputs', simple.replace(/^Derive\(\[(\([^)]*\))\]/, 'Derive([]'), /at least one output/],
  ['output path outside the store', simple.replace(P, '/tmp/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple'), /not a store path/],
  ['output path with a bad hash', simple.replace(P, '/nix/store/e4f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple'), /not a store path/],
  ['input src that is not a store path', simple.replace('],[],[],"x86', '],[],["/bin/sh"],"x86'), /input source '\/bin\/sh' is not a store path/],
  ['input drv not ending in .drv', dependent.replace('-simple.drv"', '-simple"'), /does not end in '.drv'/],
  ['input drv with no outputs', dependent.replace('["out"]', '[]'), /wants no outputs/],
  ['hash without algorithm', simple.replace('-simple","","")', '-simple","","abcd")'), /hash but no hash algorithm/],
  ['unknown hash algorithm', simple.replace('-simple","","")', '-simple","sha3","")'), /unknown hash algorithm/],
  ['hash of the wrong length', simple.replace('-simple","","")', '-simple","sha256","abcd")'), /64 lowercase hex/],
  ['invalid UTF-8', Uint8Array.from([...Buffer.from('Derive([("o'), 0xff]), /UTF-8/],
  ['bad name', simple.replace('("name","simple")', '("name","bad name")'), /illegal character/],
];

describe('parseDerivation() rejects malformed input with DRV_INVALID', () => {
  for (const [what, input, re] of malformed) {
    it(what, () => {
      let err: unknown;
      try {
        parseDerivation(dir, input);
      } catch (e) {
        err = e;
      }
      expect(isStrataError(err, 'DRV_INVALID')).toBe(true);
      expect(err).toBeInstanceOf(DerivationParseError);
      expect((err as Error).message).toMatch(re);
      expect((err as Error).message).toMatch(/^Cannot parse derivation/);
      expect((err as DerivationParseError).offset).toBeGreaterThanOrEqual(0);
    });
  }

  it('reports the offset of the fault', () => {
    const bad = simple.replace('"-c","echo', '"-c" "echo');
    try {
      parseDerivation(dir, bad);
      expect.unreachable();
    } catch (e) {
      expect((e as DerivationParseError).offset).toBe(bad.indexOf(' "echo'));
    }
  });

  it('derivationFromJson() rejects malformed JSON with DRV_INVALID', () => {
    const sd = cases[0]!.show_derivation;
    for (const bad of [null, 1, {}, { ...sd, outputs: {} }, { ...sd, system: 1 }, { ...sd, inputSrcs: ['/tmp/x'] }, { ...sd, outputs: { out: { hashAlgo: 'sha256', hash: 'zz' } } }]) {
      expect(() => derivationFromJson(dir, bad, 'x')).toThrow(expect.objectContaining({ code: 'DRV_INVALID' }));
    }
  });

  it('printDerivation() refuses a system with a quote (Nix would write a broken .drv)', () => {
    const drv = parseDerivation(dir, simple);
    expect(() => printDerivation(dir, { ...drv, system: 'a"b' })).toThrow(expect.objectContaining({ code: 'DRV_INVALID' }));
  });
});
