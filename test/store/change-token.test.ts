/**
 * LocalStore.changeToken(): the WAL-index header of the store database, which must change with
 * every commit by any process (strata or real Nix 2.8) and stay equal otherwise, since
 * `strata serve` answers memoised narinfos without a query while it is equal.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

async function openLocal(root: string): Promise<LocalStore> {
  return (await openStore(root)) as LocalStore;
}

describe('LocalStore.changeToken()', () => {
  it('stays equal across reads, and changes with every commit of another handle, deletions included', async () => {
    const root = join(tempDir(), 'store');
    // Added and closed first: the adding handle's temp roots would keep the path alive.
    const seed = await openLocal(root);
    const x = (await seed.addText('x.txt', 'x', [])).path;
    await seed.close();
    const reader = await openLocal(root);
    const writer = await openLocal(root);
    try {
      const t0 = reader.changeToken();
      expect(t0).toBeInstanceOf(Buffer);
      expect(await reader.isValidPath(x)).toBe(true);
      await reader.queryPathInfo(x);
      expect(reader.changeToken()!.equals(t0!)).toBe(true);
      await writer.addText('y.txt', 'y', []);
      const t1 = reader.changeToken()!;
      expect(t1.equals(t0!)).toBe(false);
      expect(reader.changeToken()!.equals(t1)).toBe(true);
      expect((await writer.deletePaths([x])).deleted).toEqual([x]);
      expect(reader.changeToken()!.equals(t1)).toBe(false);
      expect(await reader.isValidPath(x)).toBe(false);
    } finally {
      await writer.close();
      await reader.close();
    }
  });

  it('is undefined for a read-only open (a private snapshot of the database)', async () => {
    const root = join(tempDir(), 'store');
    await (await openLocal(root)).close();
    const ro = await openLocal(`${root}?read-only=true`);
    try {
      expect(ro.changeToken()).toBeUndefined();
    } finally {
      await ro.close();
    }
  });

  it.skipIf(!haveNix())('changes when real Nix 2.8 adds or deletes a path while strata has the database open', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const store = await openLocal(root);
    try {
      const t0 = store.changeToken()!;
      writeFileSync(join(work, 'f.txt'), 'from nix\n');
      const add = runNix('nix-store', ['--store', root, '--add', join(work, 'f.txt')]);
      expect(add.code).toBe(0);
      const p = store.storeDir.parse(add.stdout.trim());
      const t1 = store.changeToken()!;
      expect(t1.equals(t0)).toBe(false);
      expect(await store.isValidPath(p)).toBe(true);
      expect(store.changeToken()!.equals(t1)).toBe(true);
      const del = runNix('nix-store', ['--store', root, '--delete', add.stdout.trim()]);
      expect(del.code).toBe(0);
      expect(store.changeToken()!.equals(t1)).toBe(false);
      expect(await store.isValidPath(p)).toBe(false);
    } finally {
      await store.close();
    }
  });
});
