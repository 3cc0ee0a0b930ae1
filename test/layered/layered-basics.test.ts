import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { initLayered } from '../../src/store/layered/open-layered.js';
import { openStore } from '../../src/store/open.js';
import { hashTree, makeLower } from '../support/layered.js';
import { isRoot } from '../support/mounts.js';
import { runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

describe.runIf(isRoot)('layered store basics (real overlayfs)', () => {
  it('init mounts the overlay, copy-up writes rows only, real Nix verifies the merged store', async () => {
    const work = tempDir();
    const lower = await makeLower(join(work, 'lower'));
    const before = hashTree(lower.root);
    const dir = join(work, 'layered');
    const store = await initLayered(dir, [lower.root]);
    try {
      const { top, mid, leaf, dummy } = lower.paths;
      // Path info from the lower, no copy-up.
      const info = await store.queryPathInfo(top);
      expect(info?.layer).toBe('lower0');
      expect(await store.upper.isValidPath(top)).toBe(false);
      // Validity copies up the closure, references first; no byte in the upper layer.
      expect(await store.isValidPath(top)).toBe(true);
      for (const p of [top, mid, leaf]) expect(await store.upper.isValidPath(p)).toBe(true);
      expect(await store.upper.isValidPath(dummy)).toBe(false);
      expect(readdirSync(join(dir, 'upper'))).toEqual([]);
      const row = (await store.upper.queryPathInfo(top))!;
      const lowerRow = (await (await openStore(`${lower.root}?read-only=true`)).queryPathInfo(top))!;
      expect(row.registrationTime).toBe(lowerRow.registrationTime);
      expect(row.narHash.equals(lowerRow.narHash)).toBe(true);
      // Files through the merged dir.
      expect(readFileSync(store.realPath(top), 'utf8')).toContain('top uses');
      // A new path lands in the upper layer only.
      const mine = await store.addText('mine', `mine uses ${store.storeDir.print(top)}\n`, [top]);
      expect(readdirSync(join(dir, 'upper'))).toEqual([mine.path.baseName]);
      expect((await store.queryPathInfo(mine.path))?.layer).toBe('upper');
      // Redundant add: what a lower has is not written again.
      const again = await store.addText('dummy', 'dummy contents\n', []);
      expect(again.path.equals(dummy)).toBe(true);
      expect(existsSync(join(dir, 'upper', dummy.baseName))).toBe(false);
      const verify = runNix('nix-store', ['--store', dir, '--verify', '--check-contents']);
      expect(verify.code, verify.stderr).toBe(0);
      expect(statSync(join(dir, 'strata.json')).isFile()).toBe(true);
    } finally {
      await store.close();
    }
    expect(hashTree(lower.root)).toBe(before);
  });
});
