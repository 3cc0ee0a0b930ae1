import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { describe, expect, it } from 'vitest';

import { Hash } from '../../src/core/hash.js';
import { narInfoToPathInfo, parseNarInfo } from '../../src/core/narinfo.js';
import { StoreDir } from '../../src/core/store-path.js';
import { BinaryCacheStore } from '../../src/store/binary-cache/binary-cache-store.js';
import { topoSortInfos } from '../../src/store/closure.js';
import { copyPaths } from '../../src/store/copy.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { tempDir } from '../support/tmp.js';
import { COMPRESSIONS, DEPENDENT, narinfosOf, narOf, PUBLIC_KEY, writeKeys, writeVectorCache } from './_cache.js';

const dir = new StoreDir();

async function collect(s: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of s) out.push(c as Buffer);
  return Buffer.concat(out);
}

describe('strata writes the narinfos and NAR files real Nix 2.8 wrote (binary-cache.json)', () => {
  for (const compression of ['none', 'xz', 'zstd']) {
    it(`compression=${compression}: every narinfo byte for byte, every NAR file by name and content`, async () => {
      const work = tempDir();
      const { sk } = writeKeys(work);
      const cacheDir = join(work, 'cache');
      const cache = (await openStore(`file://${cacheDir}?compression=${compression}&secret-key=${sk}`)) as BinaryCacheStore;
      try {
        // The source paths carried no signatures; Nix added the cache key's.
        const infos = narinfosOf(compression).map((n) => ({ ...narInfoToPathInfo(parseNarInfo(n.text)), sigs: [] }));
        for (const info of topoSortInfos(infos)) await cache.addFromNar(info, Readable.from([narOf(info.path)]));
      } finally {
        await cache.close();
      }
      expect(readFileSync(join(cacheDir, 'nix-cache-info'), 'utf8')).toBe('StoreDir: /nix/store\n');
      for (const n of narinfosOf(compression)) {
        expect(readFileSync(join(cacheDir, n.file), 'utf8')).toBe(n.text);
        expect(readFileSync(join(cacheDir, n.nar_file)).equals(Buffer.from(n.nar_file_b64, 'base64'))).toBe(true);
      }
      // No staging leftovers.
      expect(readdirSync(join(cacheDir, 'nar')).filter((f) => f.startsWith('.'))).toEqual([]);
    });
  }
});

describe('strata reads caches written by nix copy, for every compression in the vectors', () => {
  for (const compression of COMPRESSIONS) {
    it(`compression=${compression}: narinfos parse, NARs decompress to their NarHash, the closure copies into a local store`, async () => {
      const work = tempDir();
      const cacheDir = join(work, 'cache');
      writeVectorCache(cacheDir, compression);
      const cache = (await openStore(`file://${cacheDir}`)) as BinaryCacheStore;
      const local = (await openStore(join(work, 'local'))) as LocalStore;
      try {
        for (const n of narinfosOf(compression)) {
          const p = parseNarInfo(n.text).path;
          const nar = await collect(await cache.narFromPath(p));
          expect(Hash.of('sha256', nar).equals(parseNarInfo(n.text).narHash)).toBe(true);
        }
        const all = await cache.queryAllValidPaths();
        expect(all.length).toBe(narinfosOf(compression).length);
        const r = await copyPaths(cache, local, all, { recursive: true, trustedPublicKeys: [PUBLIC_KEY] });
        expect(r.copied.length).toBe(all.length);
        for (const n of narinfosOf(compression)) {
          const ni = parseNarInfo(n.text);
          const got = await local.queryPathInfo(ni.path);
          expect(got?.narHash.equals(ni.narHash)).toBe(true);
          expect(got?.sigs).toEqual(ni.sigs);
          expect(got?.deriver?.baseName).toBe(ni.deriver?.baseName);
          expect(existsSync(local.realPath(ni.path))).toBe(true);
        }
      } finally {
        await cache.close();
        await local.close();
      }
    });
  }

  it('copies only the closure asked for, references first', async () => {
    const work = tempDir();
    writeVectorCache(join(work, 'cache'), 'xz');
    const cache = await openStore(`file://${join(work, 'cache')}`);
    const local = await openStore(join(work, 'local'));
    try {
      const order: string[] = [];
      const r = await copyPaths(cache, local, [dir.parse(DEPENDENT)], { recursive: true, trustedPublicKeys: [PUBLIC_KEY], onProgress: (p) => p.finished && order.push(p.finished.name) });
      expect(order).toEqual(['simple', 'dependent']);
      expect(r.copied.map((p) => p.name).sort()).toEqual(['dependent', 'simple']);
      expect((await local.queryAllValidPaths()).length).toBe(2);
    } finally {
      await cache.close();
      await local.close();
    }
  });
});
