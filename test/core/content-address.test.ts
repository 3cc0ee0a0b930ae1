import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import {
  checkContentAddress,
  contentAddressedPath,
  HashModuloSink,
  HashPartRewriter,
  makeClosureContentAddressed,
  makeContentAddressed,
  parseContentAddress,
  printContentAddress,
  rewriteHashParts,
  StringRewriter,
} from '../../src/core/content-address.js';
import { Hash, NIX32_ALPHABET } from '../../src/core/hash.js';
import { StoreDir } from '../../src/core/store-path.js';
import { loadVector } from '../support/vectors.js';

const dir = new StoreDir();
const mca = loadVector('make-content-addressed.json');
const drvs = loadVector('derivations.json');
const nar = loadVector('nar.json');

/** Registered references of every built output (the original closure's references). */
const refsOf = new Map<string, string[]>();
for (const c of drvs.cases) for (const b of Object.values(c.built ?? {}) as Array<{ path: string; references: string[] }>) refsOf.set(b.path, b.references);

function split(buf: Uint8Array, cuts: number[]): Uint8Array[] {
  const pts = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...pts, buf.length]) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  return out;
}

describe('make-content-addressed.json: every case reproduced byte for byte', () => {
  for (const c of mca.cases) {
    describe(c.attr, () => {
      const closure = Object.entries(c.original_closure as Record<string, string>).map(([p, b64]) => {
        const refs = refsOf.get(p);
        if (refs === undefined) throw new Error(`no references recorded for ${p}`);
        return { path: dir.parse(p), references: refs.map((r) => dir.parse(r)), nar: Buffer.from(b64, 'base64') };
      });
      const results = makeClosureContentAddressed(dir, closure);
      const newByPath = new Map([...results.values()].map((r) => [dir.print(r.path), r]));

      it('gives exactly the recorded new paths, and the recorded rewrite of the requested path', () => {
        expect([...newByPath.keys()].sort()).toEqual(Object.keys(c.new).sort());
        for (const [from, to] of Object.entries(c.rewrites as Record<string, string>)) {
          expect(dir.print(results.get(dir.parse(from).baseName)!.path)).toBe(to);
        }
      });

      for (const [p, expected] of Object.entries(c.new as Record<string, { nar_b64: string; path_info: Record<string, unknown>; db_row: Record<string, unknown> }>)) {
        it(`${p.slice(44)}: NAR, narHash, narSize, CA and references (self included)`, () => {
          const r = newByPath.get(p)!;
          expect(r).toBeDefined();
          expect(Buffer.from(r.nar!).toString('base64')).toBe(expected.nar_b64);
          expect(r.narHash.toSri()).toBe(expected.path_info.narHash);
          expect(`sha256:${r.narHash.toBase16()}`).toBe(expected.db_row.hash);
          expect(r.narSize).toBe(expected.path_info.narSize);
          expect(printContentAddress(r.ca)).toBe(expected.path_info.ca);
          expect(printContentAddress(r.ca)).toBe(expected.db_row.ca);
          expect(r.references.map((x) => dir.print(x))).toEqual(expected.path_info.references);
          expect(r.references.map((x) => dir.print(x))).toEqual(expected.db_row.references);
          // The store can verify the declared CA from the path, the CA string and the references.
          expect(() => checkContentAddress(dir, r.path, expected.path_info.ca as string, r.references)).not.toThrow();
        });
      }

      it('streams: the same result from arbitrary chunkings, with the NAR emitted as chunks', () => {
        fc.assert(
          fc.property(fc.array(fc.nat(), { maxLength: 12 }), (cuts) => {
            const remap = new Map<string, ReturnType<typeof makeContentAddressed>['path']>();
            const order = [...closure].sort((a, b) => a.references.length - b.references.length);
            for (const item of order) {
              const emitted: Uint8Array[] = [];
              const r = makeContentAddressed(dir, { ...item, nar: () => split(item.nar, cuts) }, remap, { emit: (x) => emitted.push(Buffer.from(x)) });
              expect(r.nar).toBeUndefined();
              const whole = results.get(item.path.baseName)!;
              expect(Buffer.concat(emitted).equals(whole.nar!)).toBe(true);
              expect(r.path.equals(whole.path)).toBe(true);
              remap.set(item.path.baseName, r.path);
            }
          }),
          { numRuns: 100 },
        );
      });
    });
  }
});

describe('content address strings', () => {
  it('round-trip every CA in the vectors (nar.json DB rows, derivations, mca)', () => {
    const all: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        for (const [k, x] of Object.entries(v)) {
          if (k === 'ca' && typeof x === 'string') all.push(x);
          else walk(x);
        }
      }
    };
    walk(nar);
    walk(drvs);
    walk(mca);
    const kinds = new Set(all.map((s) => s.replace(/:[^:]*$/, '')));
    expect(kinds).toEqual(new Set(['text:sha256', 'fixed:r:sha256', 'fixed:sha256', 'fixed:sha1']));
    expect(all.length).toBeGreaterThan(30);
    for (const s of all) expect(printContentAddress(parseContentAddress(s))).toBe(s);
  });

  it('accepts base16 and base64 digests and prints nix32', () => {
    const h = Hash.of('sha256', 'x');
    expect(printContentAddress(parseContentAddress(`fixed:r:sha256:${h.toBase16()}`))).toBe(`fixed:r:sha256:${h.toNix32()}`);
    expect(printContentAddress(parseContentAddress(`text:sha256:${h.toBase64()}`))).toBe(`text:sha256:${h.toNix32()}`);
    expect(parseContentAddress(`fixed:md5:${Hash.of('md5', 'x').toNix32()}`).method).toBe('flat');
  });

  it('rejects malformed content addresses with CA_INVALID', () => {
    const h = Hash.of('sha256', 'x').toNix32();
    for (const bad of ['', 'sha256:abc', `fixed:sha3:${h}`, 'fixed:sha256:abc', `text:sha1:${Hash.of('sha1', 'x').toNix32()}`, `fixed:r:${h}`, `nar:sha256:${h}`]) {
      expect(() => parseContentAddress(bad), bad).toThrow(expect.objectContaining({ code: 'CA_INVALID' }));
    }
  });

  it('gives the store path of every added path in nar.json from its CA (recursive and flat, every algorithm)', () => {
    let checked = 0;
    for (const c of nar.cases) {
      // The DB row Nix wrote for `nix-store --add`.
      const p = dir.parse(c.db_row.path);
      expect(dir.print(contentAddressedPath(dir, parseContentAddress(c.db_row.ca), p.name, []))).toBe(c.db_row.path);
      checkContentAddress(dir, p, c.db_row.ca, []);
      checked++;
      for (const [algo, path] of Object.entries(c.add_fixed_recursive as Record<string, string>)) {
        const ca = { method: 'recursive' as const, hash: new Hash(algo as 'sha256', Buffer.from(c.nix_hash_path[algo], 'hex')) };
        expect(dir.print(contentAddressedPath(dir, parseContentAddress(printContentAddress(ca)), c.name, []))).toBe(path);
        checked++;
      }
      for (const [algo, path] of Object.entries((c.add_fixed_flat ?? {}) as Record<string, string>)) {
        const ca = { method: 'flat' as const, hash: new Hash(algo as 'sha256', Buffer.from(c.flat_hashes_hex[algo], 'hex')) };
        expect(dir.print(contentAddressedPath(dir, ca, c.name, []))).toBe(path);
        checkContentAddress(dir, dir.parse(path), printContentAddress(ca), []);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(50);
  });

  it('checkContentAddress() refuses a CA that does not give the path', () => {
    const r = mca.cases[0].new;
    const [p, info] = Object.entries(r as Record<string, { path_info: { ca: string; references: string[] } }>)[0]!;
    const other = `fixed:r:sha256:${Hash.of('sha256', 'other').toNix32()}`;
    expect(() => checkContentAddress(dir, dir.parse(p), other, info.path_info.references.map((x) => dir.parse(x)))).toThrow(
      expect.objectContaining({ code: 'CA_MISMATCH' }),
    );
    expect(() => contentAddressedPath(dir, parseContentAddress(`text:sha256:${Hash.of('sha256', 'x').toNix32()}`), 'x', [], true)).toThrow(/itself/);
  });
});

const nix32Char = fc.constantFrom(...NIX32_ALPHABET);
const hashPart = fc.array(nix32Char, { minLength: 32, maxLength: 32 }).map((a) => a.join(''));

describe('streaming rewriters across chunk borders', () => {
  it('StringRewriter equals whole-buffer replacement and records stream offsets', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('a', 'b', 'c'), maxLength: 200 }), fc.array(fc.nat(), { maxLength: 8 }), (text, cuts) => {
        const buf = Buffer.from(text, 'latin1');
        const r = new StringRewriter('abca', 'zzzz');
        const out = Buffer.concat([...split(buf, cuts).map((c) => Buffer.from(r.update(c))), Buffer.from(r.flush())]);
        // Reference: Nix's loop over the whole string (find from j, replace, search on from j).
        const ref = Buffer.from(buf);
        const offs: number[] = [];
        let j = 0;
        while ((j = ref.indexOf('abca', j, 'latin1')) >= 0) {
          offs.push(j);
          ref.write('zzzz', j, 'latin1');
        }
        expect(out.toString('latin1')).toBe(ref.toString('latin1'));
        expect(r.matches).toEqual(offs);
      }),
      { numRuns: 500 },
    );
  });

  it('HashModuloSink hashes NULs plus |offsets', () => {
    const h = '94f9f6i31zwzwbf0kclq1naqxxi4c7v9';
    const data = Buffer.from(`x${h}yy${h}`);
    const sink = new HashModuloSink(h);
    for (const c of split(data, [5, 20, 33, 40])) sink.update(c);
    const got = sink.finish();
    expect(got.offsets).toEqual([1, 35]);
    const expected = Hash.of('sha256', Buffer.concat([Buffer.from(`x${'\0'.repeat(32)}yy${'\0'.repeat(32)}`, 'latin1'), Buffer.from('|1|35')]));
    expect(got.hash.equals(expected)).toBe(true);
    expect(got.size).toBe(data.length);
  });

  it('rewriteHashParts() rewrites every hash part wherever the stream is split', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(hashPart, { minLength: 2, maxLength: 6 }),
        fc.array(fc.oneof(fc.nat({ max: 5 }), fc.string({ unit: fc.constantFrom('-', '/', 'x', 'e', '\n'), maxLength: 5 })), { maxLength: 30 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (hashes, pieces, cuts) => {
          // Keys and values come from different halves so a replacement never makes a key.
          const half = Math.floor(hashes.length / 2);
          const keys = hashes.slice(0, half);
          const values = hashes.slice(half, half * 2);
          const map = new Map(keys.map((k, i) => [k, values[i]!]));
          // Pieces are separated by non-nix32 characters, so every planted key is a whole match.
          const text = pieces.map((p) => (typeof p === 'number' ? `-${hashes[p % hashes.length]}-` : p)).join('');
          let expected = text;
          for (const [k, v] of map) expected = expected.split(k).join(v);
          const buf = Buffer.from(text, 'latin1');
          const out = Buffer.concat([...rewriteHashParts(split(buf, cuts), map)].map((c) => Buffer.from(c)));
          expect(out.toString('latin1')).toBe(expected);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('HashPartRewriter does not rewrite overlapping or re-created matches', () => {
    const a = 'a'.repeat(32);
    const b = 'b'.repeat(32);
    const r = new HashPartRewriter(new Map([[a, b]]));
    // 33 a's: one match at 0, the window at 1 overlaps it and is left alone.
    const out = Buffer.concat([Buffer.from(r.update(Buffer.from('a'.repeat(20)))), Buffer.from(r.update(Buffer.from('a'.repeat(13)))), Buffer.from(r.flush())]);
    expect(out.toString()).toBe(`${b}a`);
    expect(() => new HashPartRewriter(new Map([['short', 'x']]))).toThrow(expect.objectContaining({ code: 'REWRITE_INVALID' }));
    expect(() => new StringRewriter('ab', 'abc')).toThrow(expect.objectContaining({ code: 'REWRITE_INVALID' }));
  });
});
