import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { buildProfile, treeHasDir } from '../../src/env/profile.js';
import { hashPath } from '../../src/fs/hash-path.js';
import { envVariables } from '../../src/env/variables.js';
import { openStore } from '../../src/store/open.js';
import type { LocalFsStore } from '../../src/store/store.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { addPackages, type PackageRecipe } from './fixtures.js';

const RECIPES: PackageRecipe[] = [
  {
    name: 'a',
    bin: { a: 'from a' },
    files: { 'share/man/man1/a.1': '.TH A 1\n', 'lib/liba.so': 'ELF a' },
  },
  {
    name: 'b',
    bin: { b: 'from b' },
    files: {
      'share/man/man1/b.1': '.TH B 1\n',
      'share/doc/b/README': 'b docs\n',
      'nix-support/setup-hook': 'x',
    },
  },
  { name: 'c', bin: { a: 'from c' } },
  { name: 'f', files: { 'share/f/data': 'f data\n' } },
  { name: 'e', bin: { e: 'from e' }, propagated: ['f'] },
];

describe('buildProfile()', () => {
  it('merges like buildEnv: whole-dir links, unfolded shared dirs, collisions kept by spec order, propagated packages', async () => {
    const root = tempDir();
    const store = (await openStore(root)) as LocalFsStore;
    try {
      const pkgs = await addPackages(store, RECIPES);
      // `d` ships bin/b with the same bytes as b's: identical files are no collision.
      const same = await addPackages(store, [{ name: 'd', bin: { b: 'from b' } }], new Map(pkgs));
      const order = ['a', 'b', 'c', 'e'].map((n) => pkgs.get(n)!);
      order.push(same.get('d')!);
      const dir = store.storeDir;
      const profile = await buildProfile(store, order);
      expect(profile.added).toBe(true);
      expect(profile.path.name).toBe('strata-env');
      const real = store.realPath(profile.path);
      expect(readdirSync(join(real, 'bin')).sort()).toEqual(['a', 'b', 'e']);
      expect(readlinkSync(join(real, 'bin', 'a'))).toBe(`${dir.print(pkgs.get('a')!)}/bin/a`);
      expect(readlinkSync(join(real, 'bin', 'b'))).toBe(`${dir.print(pkgs.get('b')!)}/bin/b`);
      // share/doc exists in b only: linked whole, not unfolded; share/man/man1 is shared: unfolded.
      expect(readlinkSync(join(real, 'share', 'doc'))).toBe(
        `${dir.print(pkgs.get('b')!)}/share/doc`,
      );
      expect(lstatSync(join(real, 'share', 'man', 'man1')).isDirectory()).toBe(true);
      expect(readdirSync(join(real, 'share', 'man', 'man1')).sort()).toEqual(['a.1', 'b.1']);
      // The propagated package f comes in after the listed ones; nix-support is never linked.
      expect(readlinkSync(join(real, 'share', 'f'))).toBe(`${dir.print(pkgs.get('f')!)}/share/f`);
      expect(readdirSync(real)).not.toContain('nix-support');
      expect(profile.tree.packages).toEqual([...order, pkgs.get('f')!].map((p) => dir.print(p)));
      expect(profile.tree.collisions).toEqual([
        {
          file: 'bin/a',
          kept: `${dir.print(pkgs.get('a')!)}/bin/a`,
          dropped: `${dir.print(pkgs.get('c')!)}/bin/a`,
        },
      ]);
      // A content-addressed source path with every package as a reference.
      expect(profile.info.ca).toMatch(/^fixed:r:sha256:/);
      // The in-memory NAR is the tree's own: hashing the object on disk gives the same path.
      const onDisk = await hashPath(real, 'sha256');
      expect(onDisk.hash.equals(profile.info.narHash)).toBe(true);
      expect(
        dir
          .makeFixedOutputPath('strata-env', onDisk.hash, true, profile.info.references)
          .equals(profile.path),
      ).toBe(true);
      expect(profile.info.references.map((r) => r.name).sort()).toEqual([
        'a',
        'b',
        'c',
        'd',
        'e',
        'f',
      ]);
      const loc = { storeDir: dir.path, realStoreDir: store.realStoreDir };
      const vars = envVariables(dir.print(profile.path), (rel) =>
        treeHasDir(loc, profile.tree.root, rel),
      );
      expect(vars.map((v) => v.name)).toEqual([
        'PATH',
        'MANPATH',
        'XDG_DATA_DIRS',
        'LIBRARY_PATH',
        'STRATA_ENV',
      ]);
      expect(vars[0]!.value).toBe(`${dir.print(profile.path)}/bin`);
      // The same packages give the same profile, and nothing new is written.
      const again = await buildProfile(store, order);
      expect(again.path.equals(profile.path)).toBe(true);
      expect(again.added).toBe(false);
    } finally {
      await store.close();
    }
    if (haveNix()) {
      const verify = runNix('nix-store', ['--store', root, '--verify', '--check-contents']);
      expect(verify.code, verify.stderr).toBe(0);
      expect(verify.stderr).not.toMatch(/modified|corrupt|invalid/i);
    }
  });

  it('an empty profile is an empty directory, and a file package is skipped', async () => {
    const root = tempDir();
    const store = (await openStore(root)) as LocalFsStore;
    try {
      const empty = await buildProfile(store, []);
      expect(readdirSync(store.realPath(empty.path))).toEqual([]);
      const file = await store.addText('just-a-file', 'hi\n', []);
      const p = await buildProfile(store, [file.path]);
      expect(p.tree.skipped).toEqual([store.storeDir.print(file.path)]);
      expect(p.info.references.map((r) => r.name)).toEqual(['just-a-file']);
    } finally {
      await store.close();
    }
  });
});
