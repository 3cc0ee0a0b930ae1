import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { isStrataError } from '../../src/core/error.js';
import { compressHash, Hash, HASH_SIZES, type HashAlgo, isNix32Of, nix32Decode, nix32Encode, parseHash } from '../../src/core/hash.js';
import { loadVector } from '../support/vectors.js';

const base32 = loadVector('base32.json');

describe('hash encodings against real Nix 2.8 (base32.json)', () => {
  it('has cases', () => expect(base32.cases.length).toBeGreaterThan(0));
  for (const c of base32.cases) {
    it(`${c.name}: nix32, base64 and SRI`, () => {
      const bytes = Buffer.from(c.bytes_hex, 'hex');
      expect(nix32Encode(bytes)).toBe(c.nix32);
      expect(Buffer.from(nix32Decode(c.nix32, bytes.length)).toString('hex')).toBe(c.bytes_hex);
      const h = new Hash(c.hash_type as HashAlgo, bytes);
      expect(h.toBase64()).toBe(c.base64);
      expect(h.toSri()).toBe(c.sri);
      for (const form of [c.sri, `${c.hash_type}:${c.nix32}`, `${c.hash_type}:${c.bytes_hex}`, `${c.hash_type}:${c.base64}`]) {
        expect(parseHash(form).toBase16()).toBe(c.bytes_hex);
      }
      expect(parseHash(c.nix32, c.hash_type).toBase16()).toBe(c.bytes_hex);
    });
  }
});

describe('nix32', () => {
  it('gives Nix\'s sha256 of the empty string', () => {
    expect(Hash.of('sha256', '').toNix32()).toBe('0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73');
  });

  it('round-trips every size Nix uses', () => {
    fc.assert(
      fc.property(fc.constantFrom(16, 20, 32, 64), fc.uint8Array({ minLength: 64, maxLength: 64 }), (n, raw) => {
        const bytes = raw.slice(0, n);
        expect(nix32Decode(nix32Encode(bytes), n)).toEqual(bytes);
      }),
    );
  });

  it('rejects a digit that sets bits past the last byte', () => {
    // 52 chars encode 260 bits; the first digit may only use 1 bit for 32 bytes.
    const s = 'z' + '0'.repeat(51);
    expect(() => nix32Decode(s, 32)).toThrow(/past the last byte/);
  });

  it('isNix32Of says yes exactly to what nix32Decode accepts, and to every encoding', () => {
    const alphabet = '0123456789abcdfghijklmnpqrsvwxyz';
    const lengths: Record<number, number> = { 16: 26, 20: 32, 32: 52, 64: 103 };
    fc.assert(
      fc.property(fc.constantFrom(16, 20, 32, 64), fc.array(fc.integer({ min: 0, max: 35 }), { minLength: 103, maxLength: 103 }), (n, digits) => {
        // Digits 32-35 stand for characters outside the alphabet.
        const s = digits.slice(0, lengths[n]).map((d) => alphabet[d] ?? 'eotu'[d - 32]).join('');
        let decodes = true;
        try {
          nix32Decode(s, n);
        } catch {
          decodes = false;
        }
        expect(isNix32Of(s, n)).toBe(decodes);
        expect(isNix32Of(s.slice(1), n)).toBe(false);
      }),
    );
    fc.assert(
      fc.property(fc.constantFrom(16, 20, 32, 64), fc.uint8Array({ minLength: 64, maxLength: 64 }), (n, raw) => {
        expect(isNix32Of(nix32Encode(raw.slice(0, n)), n)).toBe(true);
      }),
    );
  });

  it('a parsed hash prints its nix32 as given, an unparsed one as encoded', () => {
    const text = '0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73';
    expect(parseHash(`sha256:${text}`).toNix32()).toBe(text);
    expect(parseHash(`sha256:${parseHash(`sha256:${text}`).toBase16()}`).toNix32()).toBe(text);
  });

  it('rejects letters outside the alphabet', () => {
    for (const bad of ['e', 'o', 'u', 't', 'A']) {
      try {
        nix32Decode(bad + '0'.repeat(31), 20);
        expect.unreachable();
      } catch (e) {
        expect(isStrataError(e, 'HASH_INVALID')).toBe(true);
      }
    }
  });
});

describe('parseHash', () => {
  it('rejects unknown algorithms, wrong lengths and mismatched algorithms', () => {
    expect(() => parseHash('sha3:00')).toThrow(/unknown algorithm/);
    expect(() => parseHash('sha256:abcd')).toThrow(/wrong length/);
    expect(() => parseHash('md5-AAAA')).toThrow(/bad SRI/);
    expect(() => parseHash(`sha1:${'0'.repeat(40)}`, 'sha256')).toThrow(/expected a sha256/);
    expect(() => parseHash('0'.repeat(64))).toThrow(/no algorithm/);
  });

  it('reads back what it prints, in every encoding', () => {
    fc.assert(
      fc.property(fc.constantFrom<HashAlgo>('md5', 'sha1', 'sha256', 'sha512'), fc.uint8Array({ minLength: 64, maxLength: 64 }), (algo, raw) => {
        const h = new Hash(algo, raw.slice(0, HASH_SIZES[algo]));
        for (const enc of ['base16', 'nix32', 'base64', 'sri'] as const) {
          expect(parseHash(h.toString(enc)).equals(h)).toBe(true);
        }
      }),
    );
  });
});

describe('compressHash', () => {
  it('XOR-folds into the requested size', () => {
    const bytes = new Uint8Array(32).map((_, i) => i);
    const folded = compressHash(bytes, 20);
    expect(folded.length).toBe(20);
    expect(folded[0]).toBe(0 ^ 20);
    expect(folded[11]).toBe(11 ^ 31);
    expect(folded[12]).toBe(12);
  });
});
