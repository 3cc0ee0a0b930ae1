import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { isStrataError } from '../../src/core/error.js';
import { Hash, parseHash } from '../../src/core/hash.js';
import {
  MAX_NARINFO_BYTES,
  MAX_NARINFO_LINE_BYTES,
  narFileUrl,
  narInfoFileName,
  narInfoToPathInfo,
  parseCacheInfo,
  parseNarInfo,
  pathInfoToNarInfo,
  printCacheInfo,
  printNarInfo,
} from '../../src/core/narinfo.js';
import {
  countValidSignatures,
  fingerprintPathInfo,
  isTrusted,
  parsePublicKey,
  parseSecretKey,
  signFingerprint,
  signPathInfo,
  verifySignature,
} from '../../src/core/signature.js';
import { StoreDir, StorePath } from '../../src/core/store-path.js';
import type { PathInfo } from '../../src/store/store.js';
import { loadVector } from '../support/vectors.js';

const vectors = loadVector('binary-cache.json');
const storeDir = new StoreDir('/nix/store');
const secretKey = parseSecretKey(vectors.secret_key);
const publicKey = parsePublicKey(vectors.public_key);

interface VectorNarInfo {
  file: string;
  text: string;
  fields: Record<string, string | string[]>;
  fingerprint: string;
}
const all: Array<[string, VectorNarInfo]> = Object.entries(vectors.caches).flatMap(
  ([method, cache]) =>
    (cache as { narinfos: VectorNarInfo[] }).narinfos.map(
      (ni) => [method, ni] as [string, VectorNarInfo],
    ),
);

/** The code of the StrataError `f` throws (fails when it does not throw one). */
function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(isStrataError(e), String(e)).toBe(true);
    expect((e as Error).message).not.toMatch(/[\n\r]/);
    return (e as { code: string }).code;
  }
  throw new Error('expected a StrataError');
}

/** A CA check as a store would do it: recompute the path from the content address. */
function caIsValid(info: PathInfo): boolean {
  const m = /^(text:sha256|fixed:(r:)?(md5|sha1|sha256|sha512)):(.+)$/.exec(info.ca ?? '');
  if (m === null) return false;
  const others = info.references.filter((r) => !r.equals(info.path));
  const self = others.length !== info.references.length;
  const expected =
    m[1] === 'text:sha256'
      ? storeDir.makeTextPath(info.path.name, parseHash(m[4]!, 'sha256'), others)
      : storeDir.makeFixedOutputPath(
          info.path.name,
          parseHash(m[4]!, m[3] as 'sha256'),
          m[2] !== undefined,
          others,
          self,
        );
  return expected.equals(info.path);
}

describe('narinfos written by real Nix 2.8 (binary-cache.json)', () => {
  it('has 4 caches of 11 narinfos', () => {
    expect(Object.keys(vectors.caches).sort()).toEqual(['bzip2', 'none', 'xz', 'zstd']);
    expect(all.length).toBe(44);
  });

  for (const [method, ni] of all) {
    describe(`${method}/${ni.file}`, () => {
      it('parses, and prints back to the identical text', () => {
        const info = parseNarInfo(ni.text);
        expect(printNarInfo(info)).toBe(ni.text);
        expect(printNarInfo(parseNarInfo(new TextEncoder().encode(ni.text)))).toBe(ni.text);
        expect(narInfoFileName(info.path)).toBe(ni.file);
      });

      it('has the recorded fields', () => {
        const info = parseNarInfo(ni.text);
        const f = ni.fields;
        expect(storeDir.print(info.path)).toBe(f['StorePath']);
        expect(info.url).toBe(f['URL']);
        expect(info.compression).toBe(f['Compression']);
        expect(info.fileHash?.toString()).toBe(f['FileHash']);
        expect(String(info.fileSize)).toBe(f['FileSize']);
        expect(info.narHash.toString()).toBe(f['NarHash']);
        expect(String(info.narSize)).toBe(f['NarSize']);
        expect(info.references.map((r) => r.baseName).join(' ')).toBe(f['References']);
        expect(info.deriver?.baseName).toBe(f['Deriver']);
        expect(info.sigs).toEqual(f['Sig']);
        expect(info.ca).toBe(f['CA']);
        expect(info.system).toBeUndefined();
        expect(info.ultimate).toBe(false);
        expect(narFileUrl(info.fileHash!, info.compression)).toBe(info.url);
        const known = [
          'StorePath',
          'URL',
          'Compression',
          'FileHash',
          'FileSize',
          'NarHash',
          'NarSize',
          'References',
          'Deriver',
          'Sig',
          'CA',
        ];
        expect(Object.keys(f).filter((k) => !known.includes(k))).toEqual([]);
      });

      it('has the recorded fingerprint, and its Sig verifies with the vector key', () => {
        const info = parseNarInfo(ni.text);
        const fp = fingerprintPathInfo(storeDir, info);
        expect(fp).toBe(ni.fingerprint);
        expect(info.sigs.length).toBe(1);
        expect(verifySignature(fp, info.sigs[0]!, [publicKey])).toBe(true);
        expect(countValidSignatures(storeDir, info, [publicKey])).toBe(1);
        expect(isTrusted(storeDir, info, [publicKey])).toBe(true);
      });

      it('is re-signed by strata to the identical Sig', () => {
        const info = parseNarInfo(ni.text);
        expect(signFingerprint(ni.fingerprint, secretKey)).toBe(info.sigs[0]);
        const signed = signPathInfo(storeDir, { ...info, sigs: [] }, secretKey);
        expect(signed.sigs).toEqual(info.sigs);
        expect(printNarInfo(signed)).toBe(ni.text);
        // Signing again keeps one copy (a set, as in Nix).
        expect(signPathInfo(storeDir, signed, secretKey).sigs).toEqual(info.sigs);
      });

      it('is printed identically when built from a PathInfo and the NAR file info', () => {
        const parsed = parseNarInfo(ni.text);
        const pathInfo: PathInfo = {
          ...narInfoToPathInfo(parsed),
          registrationTime: 1_700_000_000,
          ultimate: true,
          layer: 'upper',
          references: [...parsed.references].reverse(),
        };
        const built = pathInfoToNarInfo(pathInfo, {
          url: narFileUrl(parsed.fileHash!, parsed.compression),
          compression: parsed.compression,
          fileHash: parsed.fileHash,
          fileSize: parsed.fileSize,
        });
        expect(printNarInfo(built)).toBe(ni.text);
        expect(built.ultimate).toBe(false);
        expect('layer' in built).toBe(false);
      });

      it('fails verification when any part of the fingerprint is tampered with', () => {
        const info = parseNarInfo(ni.text);
        const sig = info.sigs[0]!;
        const fp = ni.fingerprint;
        const tampered = [
          fp.replace(/;(\d+);/, (_, n: string) => `;${Number(n) + 1};`),
          fp.replace('/nix/store/', '/nix/storf/'),
          `${fp},/nix/store/00000000000000000000000000000000-extra`,
          fp.slice(0, -1),
          `2${fp.slice(1)}`,
        ];
        for (const t of tampered) {
          expect(t).not.toBe(fp);
          expect(verifySignature(t, sig, [publicKey])).toBe(false);
        }
        const otherHash = { ...info, narHash: Hash.of('sha256', 'not this NAR') };
        expect(countValidSignatures(storeDir, otherHash, [publicKey])).toBe(0);
        expect(isTrusted(storeDir, otherHash, [publicKey])).toBe(false);
      });
    });
  }

  it('nix-cache-info of every cache parses and prints back', () => {
    for (const cache of Object.values(vectors.caches) as Array<{ nix_cache_info: string }>) {
      const info = parseCacheInfo(cache.nix_cache_info);
      expect(info).toEqual({ storeDir: '/nix/store' });
      expect(printCacheInfo(info)).toBe(cache.nix_cache_info);
    }
  });
});

describe('content-addressed paths need no signature', () => {
  const caPaths = all.filter(([m, ni]) => m === 'xz' && ni.fields['CA'] !== undefined);

  it('the vectors have recursive and flat CA paths', () => {
    expect(
      caPaths.map(([, ni]) => (ni.fields['CA'] as string).split(':').slice(0, 2).join(':')).sort(),
    ).toEqual(['fixed:r', 'fixed:sha256']);
  });

  for (const [, ni] of caPaths) {
    it(`${ni.file}: trusted unsigned when the caller's CA check passes, not otherwise`, () => {
      const info = narInfoToPathInfo(parseNarInfo(ni.text));
      const unsigned = { ...info, sigs: [] };
      expect(caIsValid(unsigned)).toBe(true);
      expect(isTrusted(storeDir, unsigned, [], { caIsValid })).toBe(true);
      expect(isTrusted(storeDir, unsigned, [])).toBe(false);
      expect(countValidSignatures(storeDir, unsigned, [publicKey])).toBe(0);
      // A forged CA line does not match the path, so it earns nothing.
      const forged = { ...unsigned, ca: `fixed:r:sha256:${Hash.of('sha256', 'x').toNix32()}` };
      expect(isTrusted(storeDir, forged, [], { caIsValid })).toBe(false);
    });
  }

  it('a path without CA is not trusted through the hook', () => {
    const info = narInfoToPathInfo(parseNarInfo(all[0]![1].text));
    expect(isTrusted(storeDir, { ...info, sigs: [] }, [publicKey], { caIsValid: () => true })).toBe(
      false,
    );
  });
});

describe('parseNarInfo follows Nix 2.8 on what it accepts', () => {
  const base = all.find(([m, ni]) => m === 'xz' && ni.fields['References'] !== '')![1].text;

  it('a missing Compression line means bzip2', () => {
    expect(parseNarInfo(base.replace(/^Compression: .*\n/m, '')).compression).toBe('bzip2');
    expect(parseNarInfo(base.replace(/^Compression: .*$/m, 'Compression: ')).compression).toBe(
      'bzip2',
    );
  });

  it('Deriver: unknown-deriver means no deriver; it is then omitted when printing', () => {
    const info = parseNarInfo(base.replace(/^Deriver: .*$/m, 'Deriver: unknown-deriver'));
    expect(info.deriver).toBeUndefined();
    expect(printNarInfo(info)).toBe(base.replace(/^Deriver: .*\n/m, ''));
  });

  it('unknown keys are ignored, known ones may come in any order', () => {
    const lines = base.split('\n').slice(0, -1);
    const shuffled = `${['Future: thing', ...lines.reverse(), 'X-Other: 1'].join('\n')}\n`;
    expect(printNarInfo(parseNarInfo(shuffled))).toBe(base);
  });

  it('hashes in base16, base64 and SRI form are accepted and printed in nix32', () => {
    const info = parseNarInfo(base);
    for (const form of [
      info.narHash.toString('base16'),
      info.narHash.toString('base64'),
      info.narHash.toSri(),
    ]) {
      const text = base.replace(/^NarHash: .*$/m, `NarHash: ${form}`);
      expect(printNarInfo(parseNarInfo(text))).toBe(base);
    }
  });

  it('a CA hash in base16 is printed in nix32; one in nix32 is kept as it is', () => {
    const digest = Hash.of('sha256', 'contents');
    const withCa = (hash: string) => `${base}CA: fixed:r:sha256:${hash}\n`;
    expect(parseNarInfo(withCa(digest.toBase16())).ca).toBe(`fixed:r:sha256:${digest.toNix32()}`);
    expect(parseNarInfo(withCa(digest.toNix32())).ca).toBe(`fixed:r:sha256:${digest.toNix32()}`);
    // An uncompressed NAR's FileHash is the NarHash: one Hash, equal to both texts.
    const info = parseNarInfo(base.replace(/^FileHash: .*$/m, `FileHash: ${parseNarInfo(base).narHash.toString()}`));
    expect(info.fileHash?.toString()).toBe(info.narHash.toString());
  });

  it('a hand-written minimal narinfo (as substituted by real Nix) parses', () => {
    const info = parseNarInfo(base);
    const minimal = [
      `StorePath: ${storeDir.print(info.path)}`,
      `URL: ${info.url}`,
      'Compression: none',
      `NarHash: ${info.narHash.toString()}`,
      `NarSize: ${info.narSize}`,
      'References: ',
      '',
    ].join('\n');
    const m = parseNarInfo(minimal);
    expect(m.fileHash).toBeUndefined();
    expect(m.fileSize).toBeUndefined();
    expect(m.deriver).toBeUndefined();
    expect(m.sigs).toEqual([]);
    expect(printNarInfo(m)).toBe(minimal);
  });

  it('System is kept and printed after Deriver; Sig lines are sorted and deduplicated', () => {
    const info = parseNarInfo(base);
    const sigB = signFingerprint('other', secretKey).replace(/^[^:]+/, 'b-key');
    const sigA = signFingerprint('other', secretKey).replace(/^[^:]+/, 'a-key');
    const text = base.replace(
      /^Sig: .*$/m,
      (s) => `${s}\nSig: ${sigB}\nSig: ${sigA}\nSig: ${sigB}\nSystem: x86_64-linux`,
    );
    const parsed = parseNarInfo(text);
    expect(parsed.system).toBe('x86_64-linux');
    expect(parsed.sigs).toEqual([sigA, sigB, info.sigs[0]].sort());
    expect(printNarInfo(parsed)).toBe(
      base.replace(
        /^(Deriver: .*\n)(Sig: .*\n)/m,
        `$1System: x86_64-linux\nSig: ${sigA}\nSig: ${sigB}\n$2`,
      ),
    );
    // Only the trusted key's signature counts.
    expect(countValidSignatures(storeDir, parsed, [publicKey])).toBe(1);
  });

  it("References are sorted by base name and deduplicated, as in Nix's set", () => {
    const info = parseNarInfo(base);
    const refs = info.references.map((r) => r.baseName);
    const text = base.replace(
      /^References: .*$/m,
      `References: ${[...refs].reverse().join(' ')} ${refs[0]}`,
    );
    expect(parseNarInfo(text).references.map((r) => r.baseName)).toEqual(refs);
  });

  it('another store dir works when given', () => {
    const alt = new StoreDir('/nix/alt-store');
    const text = base.replace('StorePath: /nix/store/', 'StorePath: /nix/alt-store/');
    const info = parseNarInfo(text, { storeDir: alt });
    expect(printNarInfo(info, alt)).toBe(text);
    expect(fingerprintPathInfo(alt, info)).toMatch(/^1;\/nix\/alt-store\//);
  });
});

describe('parseNarInfo rejects malformed narinfos with NARINFO_INVALID', () => {
  const base = all.find(
    ([m, ni]) => m === 'xz' && ni.fields['CA'] === undefined && ni.fields['References'] !== '',
  )![1].text;
  const set = (key: string, value: string): string =>
    base.replace(new RegExp(`^${key}: .*$`, 'm'), `${key}: ${value}`);
  const drop = (key: string): string => base.replace(new RegExp(`^${key}: .*\\n`, 'm'), '');
  const good = parseNarInfo(base);

  const cases: Array<[string, string | Uint8Array]> = [
    ['empty text', ''],
    ['missing StorePath', drop('StorePath')],
    ['missing URL', drop('URL')],
    ['empty URL', set('URL', '')],
    ['missing NarHash', drop('NarHash')],
    ['missing NarSize', drop('NarSize')],
    ['NarSize 0', set('NarSize', '0')],
    ['NarSize not a number', set('NarSize', '12x')],
    ['NarSize negative', set('NarSize', '-5')],
    ['NarSize with leading zero', set('NarSize', '0168')],
    ['NarSize beyond 2^53', set('NarSize', '99999999999999999999')],
    ['FileSize not a number', set('FileSize', 'big')],
    [
      'StorePath in another store dir',
      base.replace('StorePath: /nix/store/', 'StorePath: /gnu/store/'),
    ],
    ['StorePath below a store path', base.replace(/^(StorePath: .*)$/m, '$1/bin')],
    ['StorePath as a base name', base.replace('StorePath: /nix/store/', 'StorePath: ')],
    [
      'StorePath with a bad hash part',
      base.replace(/^StorePath: \/nix\/store\/./m, 'StorePath: /nix/store/e'),
    ],
    ['StorePath with a bad name', base.replace(/^(StorePath: .*)$/m, '$1 x')],
    ['NarHash not a hash', set('NarHash', 'sha256:xyz')],
    ['NarHash of the wrong length', set('NarHash', `sha256:${good.narHash.toNix32().slice(1)}`)],
    ['NarHash with an unknown algorithm', set('NarHash', `sha257:${good.narHash.toNix32()}`)],
    ['NarHash without an algorithm', set('NarHash', good.narHash.toNix32())],
    ['NarHash in md5', set('NarHash', Hash.of('md5', 'x').toString())],
    [
      'NarHash with a nix32 digit past the last byte',
      set('NarHash', `sha256:z${good.narHash.toNix32().slice(1)}`),
    ],
    ['FileHash not a hash', set('FileHash', 'sha256:')],
    ['a reference that is a full path', set('References', storeDir.print(good.references[0]!))],
    ['a reference with a bad hash part', set('References', `eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x`)],
    ['a reference with no name', set('References', `${good.references[0]!.hashPart}-`)],
    ['a bad Deriver', set('Deriver', 'not-a-store-path')],
    ['a Sig without a key name', set('Sig', ':abc=')],
    ['a Sig that is not base64', set('Sig', 'key:not base64!')],
    ['a CA that is not a content address', `${base}CA: something\n`],
    ['a CA with a bad hash', `${base}CA: fixed:r:sha256:abc\n`],
    ['a CA whose nix32 hash sets a bit past the last byte', `${base}CA: fixed:r:sha256:z${'0'.repeat(51)}\n`],
    ['a CA whose nix32 hash has a letter outside the alphabet', `${base}CA: text:sha256:e${'0'.repeat(51)}\n`],
    ['CRLF line ends', base.replace(/\n/g, '\r\n')],
    ['a CR inside a value', set('URL', 'nar/x.nar\rZ')],
    ['a NUL byte', `${base}System: x86_64-linux\u0000\n`],
    ['a tab', `${base}System: x86\t64\n`],
    ['no final newline', base.slice(0, -1)],
    ['a line without a colon', `${base}garbage\n`],
    ['a line with ":" but no space', base.replace('URL: ', 'URL:')],
    ['a line starting with a colon', `${base}: value\n`],
    ['StorePath twice', `${base}StorePath: ${storeDir.print(good.path)}\n`],
    ['NarHash twice', `${base}NarHash: ${good.narHash.toString()}\n`],
    ['References twice', `${base}References: \n`],
    ['URL twice', `${base}URL: nar/other.nar\n`],
    ['a line over 64 KiB', `${base}Comment: ${'x'.repeat(MAX_NARINFO_LINE_BYTES)}\n`],
    [
      'a text over 1 MiB',
      `${base}${`Comment: ${'x'.repeat(1000)}\n`.repeat(MAX_NARINFO_BYTES / 1000)}`,
    ],
    ['bytes over 1 MiB', new Uint8Array(MAX_NARINFO_BYTES + 1).fill(0x41)],
    ['bytes that are not UTF-8', new Uint8Array([...new TextEncoder().encode(base), 0xff, 0x0a])],
    ['a 1 MiB text of non-ASCII', `${base}Comment: ${'é'.repeat(MAX_NARINFO_BYTES / 2)}\n`],
  ];
  for (const [name, text] of cases) {
    it(name, () => {
      expect(codeOf(() => parseNarInfo(text))).toBe('NARINFO_INVALID');
    });
  }

  it('a References line may exceed 64 KiB (large closures), within the 1 MiB cap', () => {
    const refs = Array.from({ length: 2000 }, (_, i) =>
      StorePath.fromParts(Hash.of('sha256', String(i)).bytes.subarray(0, 20), `dep-${i}`),
    );
    const text = set('References', refs.map((r) => r.baseName).join(' '));
    expect(text.length).toBeGreaterThan(MAX_NARINFO_LINE_BYTES);
    expect(parseNarInfo(text).references.length).toBe(2000);
  });

  it('error messages quote the source and stay on one line', () => {
    try {
      parseNarInfo(`${base}StorePath: /x\n`, { whence: 'https://cache/abc.narinfo' });
      expect.unreachable();
    } catch (e) {
      expect((e as Error).message).toBe(
        "Cannot parse narinfo 'https://cache/abc.narinfo': StorePath appears more than once",
      );
    }
  });
});

describe('printNarInfo refuses what Nix would not write', () => {
  const info = parseNarInfo(all[0]![1].text);
  it('non-sha256 hashes, zero sizes, line breaks', () => {
    expect(codeOf(() => printNarInfo({ ...info, narHash: Hash.of('sha512', 'x') }))).toBe(
      'NARINFO_INVALID',
    );
    expect(codeOf(() => printNarInfo({ ...info, fileHash: Hash.of('sha1', 'x') }))).toBe(
      'NARINFO_INVALID',
    );
    expect(codeOf(() => printNarInfo({ ...info, narSize: 0 }))).toBe('NARINFO_INVALID');
    expect(codeOf(() => printNarInfo({ ...info, url: 'a\nStorePath: /evil' }))).toBe(
      'NARINFO_INVALID',
    );
    expect(codeOf(() => printNarInfo({ ...info, system: 'x\n' }))).toBe('NARINFO_INVALID');
    expect(codeOf(() => printNarInfo({ ...info, sigs: ['no signature'] }))).toBe('NARINFO_INVALID');
  });
});

describe('nix-cache-info', () => {
  it('parses the keys Nix reads, trims values, skips other lines', () => {
    const text = 'StoreDir: /nix/store\r\nWantMassQuery: 1\nPriority: 40\nnot a pair\nOther: x\n';
    expect(parseCacheInfo(text)).toEqual({
      storeDir: '/nix/store',
      wantMassQuery: true,
      priority: 40,
    });
    expect(printCacheInfo({ storeDir: '/nix/store', wantMassQuery: true, priority: 40 })).toBe(
      'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n',
    );
    expect(printCacheInfo({ storeDir: '/nix/store', wantMassQuery: false })).toBe(
      'StoreDir: /nix/store\nWantMassQuery: 0\n',
    );
    expect(parseCacheInfo('')).toEqual({});
  });
  it('rejects bad Priority and WantMassQuery values', () => {
    expect(codeOf(() => parseCacheInfo('Priority: high\n'))).toBe('CACHE_INFO_INVALID');
    expect(codeOf(() => parseCacheInfo('WantMassQuery: yes\n'))).toBe('CACHE_INFO_INVALID');
    expect(codeOf(() => parseCacheInfo('x'.repeat(70_000)))).toBe('CACHE_INFO_INVALID');
  });
});

describe('property: print ∘ parse ∘ print is stable', () => {
  const path = fc.tuple(
    fc.uint8Array({ minLength: 20, maxLength: 20 }),
    fc.stringMatching(/^[0-9a-zA-Z+\-._?=]{1,40}$/),
  );
  it('for random narinfos', () => {
    fc.assert(
      fc.property(
        path,
        fc.array(path, { maxLength: 5 }),
        fc.option(path, { nil: undefined }),
        fc.integer({ min: 1, max: 2 ** 40 }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.constantFrom('none', 'xz', 'zstd', 'bzip2', 'br'),
        fc.option(fc.constantFrom('x86_64-linux', 'aarch64-darwin'), { nil: undefined }),
        (p, refs, drv, narSize, digest, compression, system) => {
          const mk = ([h, n]: [Uint8Array, string]): StorePath => StorePath.fromParts(h, n);
          const narHash = new Hash('sha256', digest);
          const info = signPathInfo(
            storeDir,
            pathInfoToNarInfo(
              {
                path: mk(p),
                narHash,
                narSize,
                references: refs.map(mk),
                deriver: drv && mk(drv),
                ultimate: false,
                sigs: [],
              },
              {
                url: narFileUrl(narHash, compression),
                compression,
                fileHash: narHash,
                fileSize: narSize,
                system,
              },
            ),
            secretKey,
          );
          const text = printNarInfo(info);
          const back = parseNarInfo(text);
          expect(printNarInfo(back)).toBe(text);
          expect(countValidSignatures(storeDir, back, [publicKey])).toBe(1);
        },
      ),
      { numRuns: 200 },
    );
  });
});
