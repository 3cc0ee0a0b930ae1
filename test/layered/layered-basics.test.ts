import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { initLayered } from '../../src/store/layered/open-layered.js';
import { openStore } from '../../src/store/open.js';
import { runStrata } from '../support/cli.js';
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

  it('init refuses one lower given twice before writing anything, and a failed mount leaves nothing behind', async () => {
    const work = tempDir();
    const lower = await makeLower(join(work, 'lower'));
    const dir = join(work, 'layered');
    for (const second of [lower.root, `${lower.root}/`, `local?root=${lower.root}`]) {
      const r = await runStrata(['init', dir, '--lower', lower.root, '--lower', second]);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`error: Cannot initialise '${dir}': lowers 'lower0' and 'lower1' are the same store ('${lower.root}/nix/store')\n`);
      expect(existsSync(dir)).toBe(false);
    }
    // A lower whose store dir went missing: the mount fails; init undoes what it made, and a
    // directory that was there already keeps what it held.
    renameSync(join(lower.root, 'nix/store'), join(work, 'moved'));
    mkdirSync(dir);
    writeFileSync(join(dir, 'notes'), 'mine\n');
    const r = await runStrata(['init', dir, '--lower', lower.root]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: Cannot mount overlay at/);
    expect(readdirSync(dir)).toEqual(['notes']);
    renameSync(join(work, 'moved'), join(lower.root, 'nix/store'));
    const ok = await runStrata(['init', dir, '--lower', lower.root]);
    expect(ok.code, ok.stderr).toBe(0);
    expect((await runStrata(['umount', dir])).code).toBe(0);
  });

  it('layered:///dir?read-only=true answers queries and refuses writes, changing nothing', async () => {
    const work = tempDir();
    const lower = await makeLower(join(work, 'lower'));
    const dir = join(work, 'layered');
    await (await initLayered(dir, [lower.root])).close();
    const before = hashTree(join(dir, 'nix/var'));
    const uri = `layered://${dir}?read-only=true`;
    const top = `/nix/store/${lower.paths.top.baseName}`;
    expect((await runStrata(['--store', uri, 'path-info', top])).code).toBe(0);
    writeFileSync(join(work, 'f'), 'new\n');
    const add = await runStrata(['--store', uri, 'add', join(work, 'f')]);
    expect(add.code).toBe(1);
    expect(add.stderr).toMatch(/read-only/);
    expect(readdirSync(join(dir, 'upper'))).toEqual([]);
    expect(hashTree(join(dir, 'nix/var'))).toBe(before);
  });
});

