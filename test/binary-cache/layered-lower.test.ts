import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { StoreDir } from '../../src/core/store-path.js';
import { copyPaths } from '../../src/store/copy.js';
import { fsck } from '../../src/store/layered/fsck.js';
import { initLayered } from '../../src/store/layered/open-layered.js';
import { openStore } from '../../src/store/open.js';
import { hashTree } from '../support/layered.js';
import { isRoot } from '../support/mounts.js';
import { runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { DEPENDENT, PUBLIC_KEY, writeVectorCache } from './_cache.js';

const dir = new StoreDir();
const SIMPLE = dir.parse('/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple');
const DEP = dir.parse(DEPENDENT);
const CHAIN3 = dir.parse('/nix/store/ava8qq3vphl63n9mw1cijv6r61w4k3h2-chain-3');

/** A local lower holding `simple` only, and a file:// cache with every vector path. */
async function fixture(work: string): Promise<{ lowerRoot: string; cacheUri: string }> {
  const cacheDir = join(work, 'cache');
  writeVectorCache(cacheDir, 'xz');
  const cacheUri = `file://${cacheDir}`;
  const lowerRoot = join(work, 'lower');
  const cache = await openStore(cacheUri);
  const lower = await openStore(lowerRoot);
  try {
    await copyPaths(cache, lower, [SIMPLE], { trustedPublicKeys: [PUBLIC_KEY] });
  } finally {
    await cache.close();
    await lower.close();
  }
  return { lowerRoot, cacheUri };
}

describe.runIf(isRoot)('a binary cache as a lower of a layered store', () => {
  it('answers queries with the cache as layer, fetches into the upper on first use, a local lower above wins', async () => {
    const work = tempDir();
    const { lowerRoot, cacheUri } = await fixture(work);
    const before = hashTree(lowerRoot);
    const layered = join(work, 'layered');
    const store = await initLayered(layered, [lowerRoot, cacheUri], { trustedPublicKeys: [PUBLIC_KEY] });
    try {
      expect((await store.queryPathInfo(DEP))?.layer).toBe('lower1');
      expect((await store.queryPathInfo(SIMPLE))?.layer).toBe('lower0');
      expect(await store.upper.isValidPath(DEP)).toBe(false);
      expect(readdirSync(join(layered, 'upper'))).toEqual([]);
      // First real use: the closure becomes valid; only the cache's path is written to the upper.
      expect(await store.isValidPath(DEP)).toBe(true);
      expect(await store.upper.isValidPath(DEP)).toBe(true);
      expect(await store.upper.isValidPath(SIMPLE)).toBe(true);
      expect(readdirSync(join(layered, 'upper'))).toEqual([DEP.baseName]);
      expect((await store.queryPathInfo(DEP))?.layer).toBe('upper');
      expect((await store.upper.queryPathInfo(DEP))?.sigs.length).toBe(1);
      // Reading a NAR through the layered store fetches too.
      let narBytes = 0;
      for await (const c of await store.narFromPath(CHAIN3)) narBytes += (c as Buffer).length;
      expect(narBytes).toBe(168);
      expect(existsSync(join(layered, 'upper', CHAIN3.baseName))).toBe(true);
      const v = runNix('nix-store', ['--store', layered, '--verify', '--check-contents']);
      expect(v.code, v.stderr).toBe(0);
      expect(hashTree(lowerRoot)).toBe(before);
    } finally {
      await store.close();
    }
  });

  it('fsck: paths fetched from the cache into the upper are no duplicates, and --repair leaves them', async () => {
    const work = tempDir();
    const { lowerRoot, cacheUri } = await fixture(work);
    const layered = join(work, 'layered');
    const store = await initLayered(layered, [lowerRoot, cacheUri], { trustedPublicKeys: [PUBLIC_KEY] });
    try {
      expect(await store.isValidPath(DEP)).toBe(true);
      expect(readdirSync(join(layered, 'upper'))).toEqual([DEP.baseName]);
      expect((await fsck(store, { repair: true })).problems).toEqual([]);
      expect(readdirSync(join(layered, 'upper'))).toEqual([DEP.baseName]);
      const v = runNix('nix-store', ['--store', layered, '--verify', '--check-contents']);
      expect(v.code, v.stderr).toBe(0);
    } finally {
      await store.close();
    }
  });

  it('refuses cache paths not signed by a trusted key, and fetches nothing', async () => {
    const work = tempDir();
    const { lowerRoot, cacheUri } = await fixture(work);
    const layered = join(work, 'layered');
    const store = await initLayered(layered, [lowerRoot, cacheUri], { trustedPublicKeys: [] });
    try {
      expect((await store.queryPathInfo(DEP))?.layer).toBe('lower1');
      await expect(store.isValidPath(DEP)).rejects.toThrow(/is not signed by any of the keys in 'trusted-public-keys'/);
      expect(await store.upper.isValidPath(DEP)).toBe(false);
      expect(readdirSync(join(layered, 'upper'))).toEqual([]);
    } finally {
      await store.close();
    }
  });
});
