import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it, vi } from 'vitest';

import { isStrataError } from '../../src/core/error.js';
import { parseNarInfo } from '../../src/core/narinfo.js';
import { StoreDir } from '../../src/core/store-path.js';
import { copyPaths } from '../../src/store/copy.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { substitutePaths } from '../../src/store/substitute.js';
import { tempDir } from '../support/tmp.js';
import { DEPENDENT, narinfosOf, PUBLIC_KEY, writeVectorCache } from './_cache.js';

const dir = new StoreDir();
const SIMPLE = '/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple';
const TREE1 = '/nix/store/7a6pv4ibxqq5h7k3hhgh076dwmp6cq4i-tree1';

function vec(compression: string, name: string) {
  return narinfosOf(compression).find((n) => n.text.startsWith(`StorePath: ${name}\n`))!;
}

/** A cache from the vectors with one edit applied, and an empty local store. */
async function setup(compression: string, edit: (cacheDir: string) => void): Promise<{ cache: Store; local: Store; done: () => Promise<void> }> {
  const work = tempDir();
  const cacheDir = join(work, 'cache');
  writeVectorCache(cacheDir, compression);
  edit(cacheDir);
  const cache = await openStore(`file://${cacheDir}`);
  const local = await openStore(join(work, 'local'));
  return { cache, local, done: async () => (await cache.close(), await local.close()) };
}

async function expectRefused(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isStrataError(e), String(e)).toBe(true);
  expect((e as { code: string }).code).toBe(code);
  expect((e as Error).message).toMatch(message);
  expect((e as Error).message).not.toContain('\n');
}

function rewriteNarInfo(cacheDir: string, compression: string, path: string, f: (t: string) => string): void {
  const n = vec(compression, path);
  writeFileSync(join(cacheDir, n.file), f(n.text));
}

const unsigned = (t: string) => t.replace(/^Sig: .*\n/m, '');

describe('hostile caches are refused and nothing becomes valid', () => {
  const cases: Array<{ name: string; compression: string; edit: (d: string) => void; code: string; message: RegExp; requireSigs?: boolean }> = [
    {
      name: 'wrong NarHash',
      compression: 'none',
      requireSigs: false,
      edit: (d) => rewriteNarInfo(d, 'none', SIMPLE, (t) => t.replace(/NarHash: sha256:\w+/, `NarHash: sha256:${'1'.repeat(52)}`)),
      code: 'HASH_MISMATCH',
      message: /Cannot (read|add) '\/nix\/store\/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple'/,
    },
    {
      name: 'wrong NarSize',
      compression: 'xz',
      requireSigs: false,
      edit: (d) => rewriteNarInfo(d, 'xz', SIMPLE, (t) => t.replace('NarSize: 120', 'NarSize: 112')),
      code: 'SIZE_MISMATCH',
      message: /NarSize mismatch|NAR size mismatch/,
    },
    {
      name: 'NAR file changed but same size (compression none)',
      compression: 'none',
      edit: (d) => {
        const f = join(d, vec('none', SIMPLE).nar_file);
        const b = readFileSync(f);
        b[b.length - 20] = b[b.length - 20]! ^ 1;
        writeFileSync(f, b);
      },
      code: 'HASH_MISMATCH',
      message: /FileHash mismatch/,
    },
    {
      name: 'truncated xz file without FileHash/FileSize',
      compression: 'xz',
      requireSigs: false,
      edit: (d) => {
        const n = vec('xz', SIMPLE);
        const f = join(d, n.nar_file);
        writeFileSync(f, readFileSync(f).subarray(0, 60));
        rewriteNarInfo(d, 'xz', SIMPLE, (t) => t.replace(/^File(Hash|Size): .*\n/gm, ''));
      },
      code: 'COMPRESSION_INVALID',
      message: /Cannot decompress 'xz' data/,
    },
    {
      name: 'corrupt zstd file without FileHash/FileSize',
      compression: 'zstd',
      requireSigs: false,
      edit: (d) => {
        const f = join(d, vec('zstd', SIMPLE).nar_file);
        const b = readFileSync(f);
        b.fill(0x41, 10, 30);
        writeFileSync(f, b);
        rewriteNarInfo(d, 'zstd', SIMPLE, (t) => t.replace(/^File(Hash|Size): .*\n/gm, ''));
      },
      code: 'COMPRESSION_INVALID',
      message: /Cannot decompress 'zstd' data/,
    },
    {
      name: 'missing signature under require-sigs',
      compression: 'xz',
      edit: (d) => rewriteNarInfo(d, 'xz', SIMPLE, unsigned),
      code: 'SIG_UNTRUSTED',
      message: /is not signed by any of the keys in 'trusted-public-keys'/,
    },
    {
      name: 'bad signature (tampered bytes) under require-sigs',
      compression: 'xz',
      edit: (d) => rewriteNarInfo(d, 'xz', SIMPLE, (t) => t.replace(/Sig: vectors-test-key-1:(.)/, (_m, c: string) => `Sig: vectors-test-key-1:${c === 'A' ? 'B' : 'A'}`)),
      code: 'SIG_UNTRUSTED',
      message: /not signed/,
    },
    {
      name: 'a false CA claim on an unsigned input-addressed path',
      compression: 'xz',
      edit: (d) => rewriteNarInfo(d, 'xz', SIMPLE, (t) => unsigned(t) + `CA: fixed:r:sha256:${'0'.repeat(52)}\n`),
      code: 'SIG_UNTRUSTED',
      message: /not signed/,
    },
    {
      name: 'a narinfo whose StorePath differs from the one asked for',
      compression: 'xz',
      edit: (d) => rewriteNarInfo(d, 'xz', SIMPLE, (t) => t.replace('94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple', '94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple2')),
      code: 'NARINFO_MISMATCH',
      message: /its StorePath '\/nix\/store\/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple2' is not/,
    },
    {
      name: 'a narinfo stored under another hash part',
      compression: 'xz',
      edit: (d) => rewriteNarInfo(d, 'xz', SIMPLE, () => vec('xz', DEPENDENT).text),
      code: 'NARINFO_MISMATCH',
      message: /has another hash part/,
    },
    {
      name: 'malformed narinfo lines',
      compression: 'xz',
      edit: (d) => rewriteNarInfo(d, 'xz', SIMPLE, (t) => t.replace('NarSize: 120\n', 'NarSize 120\n')),
      code: 'NARINFO_INVALID',
      message: /line \d+ is not 'Key: value'/,
    },
    {
      name: 'a NAR URL outside the cache',
      compression: 'xz',
      requireSigs: false,
      edit: (d) => rewriteNarInfo(d, 'xz', SIMPLE, (t) => t.replace(/URL: .*/, 'URL: ../../etc/passwd')),
      code: 'NARINFO_INVALID',
      message: /is not a NAR file of this cache/,
    },
    {
      name: 'a NAR URL outside the cache (compression none, read whole)',
      compression: 'none',
      requireSigs: false,
      edit: (d) => rewriteNarInfo(d, 'none', SIMPLE, (t) => t.replace(/URL: .*/, 'URL: ../../etc/passwd')),
      code: 'NARINFO_INVALID',
      message: /is not a NAR file of this cache/,
    },
    {
      name: 'NAR file longer than declared (compression none, read whole)',
      compression: 'none',
      edit: (d) => writeFileSync(join(d, vec('none', SIMPLE).nar_file), Buffer.concat([readFileSync(join(d, vec('none', SIMPLE).nar_file)), Buffer.alloc(1 << 20)])),
      code: 'SIZE_MISMATCH',
      message: /FileSize mismatch, got more than 120 bytes$/,
    },
    {
      name: 'NAR file truncated (compression none, read whole)',
      compression: 'none',
      edit: (d) => writeFileSync(join(d, vec('none', SIMPLE).nar_file), readFileSync(join(d, vec('none', SIMPLE).nar_file)).subarray(0, 64)),
      code: 'SIZE_MISMATCH',
      message: /FileSize mismatch, got 64$/,
    },
    {
      name: 'NAR file missing (compression none, read whole)',
      compression: 'none',
      edit: (d) => rmSync(join(d, vec('none', SIMPLE).nar_file)),
      code: 'NAR_MISSING',
      message: /its NAR file 'nar\/.*' does not exist/,
    },
  ];
  it('small NARs of an uncompressed cache are read whole (narBytes), not through the stream stages', async () => {
    const { cache, local, done } = await setup('none', () => {});
    try {
      const streamed = vi.spyOn(cache, 'narFromPath');
      const whole = vi.spyOn(cache as Store & Required<Pick<Store, 'narBytes'>>, 'narBytes');
      const r = await copyPaths(cache, local, [dir.parse(DEPENDENT)], { recursive: true, trustedPublicKeys: [PUBLIC_KEY] });
      expect(r.copied.length).toBe(2);
      expect(whole).toHaveBeenCalledTimes(2);
      expect(streamed).not.toHaveBeenCalled();
    } finally {
      await done();
    }
  });

  for (const c of cases) {
    it(`${c.name}: ${c.code}`, async () => {
      const { cache, local, done } = await setup(c.compression, c.edit);
      try {
        await expectRefused(copyPaths(cache, local, [dir.parse(DEPENDENT)], { recursive: true, trustedPublicKeys: [PUBLIC_KEY], requireSigs: c.requireSigs }), c.code, c.message);
        expect(await local.queryAllValidPaths()).toEqual([]);
      } finally {
        await done();
      }
    });
  }

  it('an unsigned path whose CA really gives its store path is accepted under require-sigs', async () => {
    const { cache, local, done } = await setup('xz', (d) => rewriteNarInfo(d, 'xz', TREE1, unsigned));
    try {
      const r = await copyPaths(cache, local, [dir.parse(TREE1)], { trustedPublicKeys: [] });
      expect(r.copied.map((p) => p.name)).toEqual(['tree1']);
      expect((await local.queryPathInfo(dir.parse(TREE1)))?.ca).toBe(parseNarInfo(vec('xz', TREE1).text).ca);
    } finally {
      await done();
    }
  });

  it('substitutePaths reports untrusted paths as missing, with the reason, and fetches nothing', async () => {
    const { cache, local, done } = await setup('xz', (d) => rewriteNarInfo(d, 'xz', SIMPLE, unsigned));
    try {
      const r = await substitutePaths(local, [cache], [dir.parse(DEPENDENT)], { trustedPublicKeys: [PUBLIC_KEY] });
      expect(r.substituted).toEqual([]);
      expect(r.missing.map((p) => p.name).sort()).toEqual(['dependent', 'simple']);
      expect(r.reasons.get('94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple')).toContain("not signed by any of the keys in 'trusted-public-keys'");
      expect(await local.queryAllValidPaths()).toEqual([]);
    } finally {
      await done();
    }
  });

  it('substitutePaths takes a path from the next substituter when its NAR from the first is corrupt, as Nix does', async () => {
    const work = tempDir();
    const corrupt = (d: string) => {
      const f = join(d, vec('xz', SIMPLE).nar_file);
      const b = readFileSync(f);
      b[b.length - 20] = b[b.length - 20]! ^ 1;
      writeFileSync(f, b);
    };
    writeVectorCache(join(work, 'bad'), 'xz');
    corrupt(join(work, 'bad'));
    writeVectorCache(join(work, 'good'), 'zstd');
    const bad = await openStore(`file://${join(work, 'bad')}`);
    const good = await openStore(`file://${join(work, 'good')}`);
    const local = await openStore(join(work, 'local'));
    const alone = await openStore(join(work, 'alone'));
    try {
      const r = await substitutePaths(local, [bad, good], [dir.parse(DEPENDENT)], { trustedPublicKeys: [PUBLIC_KEY] });
      expect(r.substituted.map((p) => p.name)).toEqual(['simple', 'dependent']);
      expect(r.missing).toEqual([]);
      expect((await local.queryAllValidPaths()).map((p) => p.name).sort()).toEqual(['dependent', 'simple']);
      // With no other substituter the failure stands and nothing of the chain becomes valid.
      // Which check trips first, the xz decoder's or the FileHash, depends on how the stages interleave.
      const e = await substitutePaths(alone, [bad], [dir.parse(DEPENDENT)], { trustedPublicKeys: [PUBLIC_KEY] }).catch((x: unknown) => x);
      expect(isStrataError(e, 'COMPRESSION_INVALID') || isStrataError(e, 'HASH_MISMATCH'), String(e)).toBe(true);
      expect(await alone.queryAllValidPaths()).toEqual([]);
    } finally {
      for (const s of [bad, good, local, alone]) await s.close();
    }
  });

  it('a cache with another StoreDir is refused when opened', async () => {
    const work = tempDir();
    writeVectorCache(join(work, 'c'), 'xz');
    writeFileSync(join(work, 'c', 'nix-cache-info'), 'StoreDir: /gnu/store\n');
    await expectRefused(openStore(`file://${join(work, 'c')}`), 'CACHE_STORE_DIR_MISMATCH', /its store dir '\/gnu\/store' is not '\/nix\/store'/);
  });
});
