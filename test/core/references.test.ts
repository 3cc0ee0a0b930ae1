import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { NIX32_ALPHABET } from '../../src/core/hash.js';
import { ReferenceScanner, scanReferences, scanReferencesAsync } from '../../src/core/references.js';
import { StoreDir, type StorePath } from '../../src/core/store-path.js';
import { loadVector } from '../support/vectors.js';

const dir = new StoreDir();
const vec = loadVector('derivations.json');

interface Built {
  path: string;
  nar_b64: string;
  references: string[];
}
interface Case {
  attr: string;
  drv_path: string;
  show_derivation: { inputSrcs: string[]; inputDrvs: Record<string, string[]> };
  outputs: Record<string, string>;
  built?: Record<string, Built>;
}
const cases: Case[] = vec.cases;

/** Registered references of every built output in the file, to close the input set. */
const refsOf = new Map<string, string[]>();
for (const c of cases) for (const b of Object.values(c.built ?? {})) refsOf.set(b.path, b.references);
const drvByPath = new Map(cases.map((c) => [c.drv_path, c]));

function closure(roots: string[]): Set<string> {
  const seen = new Set<string>();
  const todo = [...roots];
  while (todo.length > 0) {
    const p = todo.pop()!;
    if (seen.has(p)) continue;
    seen.add(p);
    todo.push(...(refsOf.get(p) ?? []));
  }
  return seen;
}

describe('scanReferences() on the built outputs of derivations.json', () => {
  const built = cases.filter((c) => c.built !== undefined);
  it('covers every case that was built', () => {
    expect(built.length).toBe(cases.length);
  });

  for (const c of built) {
    for (const [output, b] of Object.entries(c.built!)) {
      it(`${c.attr}.${output} gives exactly the registered references`, () => {
        // Candidates as Nix builds them: the input closure plus this derivation's own outputs.
        const inputs = [...c.show_derivation.inputSrcs];
        for (const [drv, outs] of Object.entries(c.show_derivation.inputDrvs)) {
          const input = drvByPath.get(drv);
          expect(input, `input ${drv} is in the vectors`).toBeDefined();
          for (const o of outs) inputs.push(input!.outputs[o]!);
        }
        const candidates = [...closure(inputs), ...Object.values(c.outputs)].map((p) => dir.parse(p));
        const nar = Buffer.from(b.nar_b64, 'base64');
        const got = scanReferences(nar, candidates).map((p) => dir.print(p));
        expect(got).toEqual([...b.references].sort());
        // One byte at a time: every hash straddles chunk borders.
        const bytes = [...nar].map((x) => Uint8Array.of(x));
        expect(scanReferences(bytes, candidates).map((p) => dir.print(p))).toEqual([...b.references].sort());
      });
    }
  }

  it('scanReferencesAsync() agrees on a stream', async () => {
    const c = cases.find((x) => x.attr === 'refs')!;
    const nar = Buffer.from(c.built!.out!.nar_b64, 'base64');
    const candidates = [...refsOf.keys()].map((p) => dir.parse(p));
    async function* chunks() {
      for (let i = 0; i < nar.length; i += 7) yield nar.subarray(i, i + 7);
    }
    expect(await scanReferencesAsync(chunks(), candidates)).toEqual(scanReferences(nar, candidates));
  });
});

const nix32Char = fc.constantFrom(...NIX32_ALPHABET);
const hashPart = fc.array(nix32Char, { minLength: 32, maxLength: 32 }).map((a) => a.join(''));

describe('ReferenceScanner across chunk borders', () => {
  it('finds exactly the planted hashes, however the stream is split', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(hashPart, { minLength: 1, maxLength: 8 }),
        fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 6 }),
        fc.uint8Array({ minLength: 0, maxLength: 400 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        fc.boolean(),
        (hashes, plants, noise, cuts, nix32Noise) => {
          // Noise made of nix32 characters makes long runs, the hard case for the skip logic.
          const data = Buffer.from(nix32Noise ? noise.map((b) => NIX32_ALPHABET.charCodeAt(b & 31)) : noise);
          const parts: Buffer[] = [data];
          const planted = new Set<string>();
          for (const [which, at] of plants) {
            const h = hashes[which % hashes.length]!;
            const whole = Buffer.concat(parts);
            const pos = whole.length === 0 ? 0 : at % (whole.length + 1);
            parts.splice(0, parts.length, whole.subarray(0, pos), Buffer.from(h, 'latin1'), whole.subarray(pos));
            planted.add(h);
          }
          const stream = Buffer.concat(parts);
          // What is really in the stream (noise may split or complete a planted hash).
          const truth = new Set(hashes.filter((h) => stream.includes(h, 0, 'latin1')));
          for (const h of planted) expect(truth.has(h) || !stream.includes(h)).toBe(true);
          const sortedCuts = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
          const s = new ReferenceScanner(hashes);
          let prev = 0;
          for (const c of [...sortedCuts, stream.length]) {
            s.update(stream.subarray(prev, c));
            prev = c;
          }
          expect(s.found()).toEqual(truth);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('needs all 32 characters: a prefix at the end or a changed character is no reference', () => {
    const h = '94f9f6i31zwzwbf0kclq1naqxxi4c7v9';
    const s = new ReferenceScanner([h]);
    s.update(Buffer.from(`x${h.slice(0, 31)}`));
    expect(s.found().size).toBe(0);
    const t = new ReferenceScanner([h]);
    t.update(Buffer.from(`/nix/store/${h.slice(0, 10)}0${h.slice(11)}-simple`));
    expect(t.found().size).toBe(0);
    t.update(Buffer.from(h.slice(0, 5)));
    t.update(Buffer.from(h.slice(5, 6)));
    t.update(Buffer.from(h.slice(6)));
    expect(t.found()).toEqual(new Set([h]));
  });

  it('finds a hash inside a longer run of nix32 characters (a bare hash, no /nix/store/ prefix)', () => {
    const h = 'gl35v4rh9ccxzsbhfbf6rxb68hlm46i9';
    const s = new ReferenceScanner([h]);
    s.update(Buffer.from(`hash:abc${h}xyz`));
    expect(s.found()).toEqual(new Set([h]));
  });

  it('rejects candidates that are not 32-character nix32 hash parts', () => {
    expect(() => new ReferenceScanner(['abc'])).toThrow(expect.objectContaining({ code: 'HASH_INVALID' }));
    expect(() => new ReferenceScanner(['e'.repeat(32)])).toThrow(/nix32 hash part/);
  });

  it('returns StorePaths sorted by base name and deduplicated', () => {
    const a = dir.parse('/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple');
    const b = dir.parse('/nix/store/gl35v4rh9ccxzsbhfbf6rxb68hlm46i9-dependent');
    const got: StorePath[] = scanReferences([Buffer.from(`${b.hashPart} ${a.hashPart}`)], [b, a, a]);
    expect(got.map((p) => p.baseName)).toEqual([a.baseName, b.baseName]);
  });
});
