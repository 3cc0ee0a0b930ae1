/**
 * Real Nix's functional tests for its layered store (nix-local-overlay.md §10), ported to strata
 * with the same expected outcomes — once over one lower, and the stacking ones over three.
 * Real overlayfs mounts (CI is root); tempDir() unmounts everything under it after each test.
 */
import { appendFileSync, chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

import { describe, expect, it } from 'vitest';

import type { LocalStore } from '../../src/store/local/local-store.js';
import type { LayeredStore } from '../../src/store/layered/layered-store.js';
import { initLayered, type MountState, openLayered } from '../../src/store/layered/open-layered.js';
import { openStore } from '../../src/store/open.js';
import { runStrata, strataOk } from '../support/cli.js';
import { addBuilt, hashTree, makeLower, type LowerFixture } from '../support/layered.js';
import { isRoot } from '../support/mounts.js';
import { runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

async function setup(lowerCount = 1): Promise<{ work: string; dir: string; lowers: LowerFixture[]; store: LayeredStore; hashes: string[] }> {
  const work = tempDir();
  const lowers: LowerFixture[] = [];
  for (let i = 0; i < lowerCount; i++) lowers.push(await makeLower(join(work, `lower${i}`), `l${i}`));
  const hashes = lowers.map((l) => hashTree(l.root));
  const dir = join(work, 'layered');
  const store = await initLayered(dir, lowers.map((l) => l.root));
  return { work, dir, lowers, store, hashes };
}

async function addToLower(root: string, name: string, text: string): Promise<void> {
  const s = (await openStore(root)) as LocalStore;
  try {
    await s.addText(name, text, []);
  } finally {
    await s.close();
  }
}

const sorted = (xs: { baseName: string }[]) => xs.map((x) => x.baseName).sort();

describe.runIf(isRoot)('layered store: real Nix functional scenarios', () => {
  it('check-post-init: lower files show through, queries agree with the lower store', async () => {
    const { dir, lowers, store, hashes } = await setup();
    const { top, mid, leaf } = lowers[0]!.paths;
    const lower = (await openStore(`${lowers[0]!.root}?read-only=true`)) as LocalStore;
    try {
      expect(existsSync(join(lowers[0]!.root, 'nix/store', top.baseName))).toBe(true);
      expect(existsSync(join(dir, 'upper', top.baseName))).toBe(false);
      expect(readFileSync(store.realPath(top), 'utf8')).toBe(readFileSync(lower.realPath(top), 'utf8'));
      expect(sorted(await store.queryReferrers(leaf))).toEqual(sorted(await lower.queryReferrers(leaf)));
      expect((await store.queryPathFromHashPart(mid.hashPart))?.baseName).toBe(mid.baseName);
      const req = await strataOk(['--store', `layered://${dir}`, 'query', '--requisites', store.storeDir.print(top)]);
      const lreq = await strataOk(['--store', `${lowers[0]!.root}?read-only=true`, 'query', '--requisites', store.storeDir.print(top)]);
      expect(req).toBe(lreq);
    } finally {
      await lower.close();
      await store.close();
    }
    expect(hashTree(lowers[0]!.root)).toBe(hashes[0]);
  });

  it('redundant-add: adding what the lower has returns its path and writes nothing to the upper', async () => {
    const { dir, lowers, store, hashes } = await setup();
    try {
      const again = await store.addText('dummy', 'dummy contents\n', []);
      expect(again.path.equals(lowers[0]!.paths.dummy)).toBe(true);
      expect(readdirSync(join(dir, 'upper'))).toEqual([]);
    } finally {
      await store.close();
    }
    expect(hashTree(lowers[0]!.root)).toBe(hashes[0]);
  });

  it('build/add: a new path lands in the upper dir only, and verifies', async () => {
    const { work, dir, lowers, store, hashes } = await setup();
    try {
      mkdirSync(join(work, 'pkg/bin'), { recursive: true });
      writeFileSync(join(work, 'pkg/bin/hello'), '#!/bin/sh\necho hello\n');
      chmodSync(join(work, 'pkg/bin/hello'), 0o755);
      const info = await store.addPath(join(work, 'pkg'));
      expect(existsSync(join(dir, 'upper', info.path.baseName))).toBe(true);
      expect(existsSync(join(lowers[0]!.root, 'nix/store', info.path.baseName))).toBe(false);
      expect((await store.verify({ checkContents: true })).ok).toBe(true);
    } finally {
      await store.close();
    }
    expect(hashTree(lowers[0]!.root)).toBe(hashes[0]);
  });

  it('bad-uris: local-overlay:// refuses a wrong root, lower or upper with Nix\'s message', async () => {
    const work = tempDir();
    const lower = await makeLower(join(work, 'store-a'));
    for (const d of ['store-b', 'workdir', 'merged-store/nix/store', 'other']) mkdirSync(join(work, d), { recursive: true });
    const m = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower.root}/nix/store,upperdir=${work}/store-b,workdir=${work}/workdir`, `${work}/merged-store/nix/store`]);
    expect(m.status).toBe(0);
    const good = `local-overlay://?root=${work}/merged-store&lower-store=${lower.root}&upper-layer=${work}/store-b`;
    const ok = await openStore(good);
    expect(await ok.isValidPath(lower.paths.top)).toBe(true);
    await ok.close();
    // upper-layer is a path setting: Nix canonicalises it (no symlinks resolved) before its mount check.
    for (const upper of [`${work}/store-b/`, `${work}/./store-b`, `${work}//store-b`, `${work}/other/../store-b`]) {
      const same = await openStore(`local-overlay://?root=${work}/merged-store&lower-store=${lower.root}&upper-layer=${upper}`);
      expect(await same.isValidPath(lower.paths.mid)).toBe(true);
      await same.close();
    }
    for (const bad of [
      `local-overlay://?root=${work}/other&lower-store=${lower.root}&upper-layer=${work}/store-b`,
      `local-overlay://?root=${work}/merged-store&lower-store=${work}/other&upper-layer=${work}/store-b`,
      `local-overlay://?root=${work}/merged-store&lower-store=${lower.root}&upper-layer=${work}/other`,
    ]) {
      const r = await runStrata(['--store', bad, 'path-info', '--all']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/overlay filesystem .* mounted incorrectly/);
    }
    const r = await runStrata(['--store', `local-overlay://?root=${work}/merged-store&lower-store=${lower.root}`, 'path-info', '--all']);
    expect(r.stderr).toMatch(/requires the 'upper-layer' setting/);
  });

  it('add-lower: a path added to the lower shows up after strata notices the new generation', async () => {
    const { dir, lowers, store } = await setup();
    await store.close();
    await addToLower(lowers[0]!.root, 'late', 'added later\n');
    const states: string[] = [];
    const again = await openLayered(`layered://${dir}`, dir, { onMount: (s) => states.push(s.action) });
    try {
      expect(states).toEqual(['remounted']);
      const late = again.storeDir.makeTextPath('late', (await import('../../src/core/hash.js')).Hash.of('sha256', 'added later\n'));
      expect(await again.isValidPath(late)).toBe(true);
      expect(readFileSync(again.realPath(late), 'utf8')).toBe('added later\n');
      const mine = await again.addText('mine', 'upper data', []);
      expect(existsSync(join(dir, 'upper', mine.path.baseName))).toBe(true);
    } finally {
      await again.close();
    }
  });

  it('delete-refs: lower paths an upper path refers to cannot be deleted; afterwards only their rows go', async () => {
    const { dir, lowers, store: first, hashes } = await setup();
    const { top, mid, leaf } = lowers[0]!.paths;
    const mine = await first.addText('mine', `uses ${first.storeDir.print(top)}`, [top]);
    // A process's own temp roots keep what it added alive (as in Nix): delete from a fresh one.
    await first.close();
    const store = await openLayered(`layered://${dir}`, dir);
    try {
      for (const p of [top, mid, leaf]) await expect(store.deletePaths([p])).rejects.toMatchObject({ code: 'PATH_ALIVE' });
      await store.deletePaths([mine.path]);
      await store.deletePaths([top]);
      await store.deletePaths([mid]);
      await store.deletePaths([leaf]);
      // Faux-delete: the rows went, the lower files still show through and the lower still has them.
      expect(await store.upper.isValidPath(leaf)).toBe(false);
      expect(existsSync(store.realPath(leaf))).toBe(true);
      expect((await store.queryPathInfo(leaf))?.layer).toBe('lower0');
    } finally {
      await store.close();
    }
    expect(hashTree(lowers[0]!.root)).toBe(hashes[0]);
  });

  it('delete-duplicate: deleting a path in both layers removes the upper copy, no whiteout', async () => {
    const { dir, lowers, store } = await setup();
    const dup = await store.addText('dup', 'duplicated\n', []);
    await store.close();
    await addToLower(lowers[0]!.root, 'dup', 'duplicated\n');
    const s = await openLayered(`layered://${dir}`, dir);
    try {
      const upperIno = lstatSync(join(dir, 'upper', dup.path.baseName)).ino;
      const lowerIno = lstatSync(join(lowers[0]!.root, 'nix/store', dup.path.baseName)).ino;
      expect(upperIno).not.toBe(lowerIno);
      const r = await s.deletePaths([dup.path]);
      expect(r.bytesFreed).toBe('duplicated\n'.length);
      expect(existsSync(join(dir, 'upper', dup.path.baseName))).toBe(false);
      expect(readFileSync(s.realPath(dup.path), 'utf8')).toBe('duplicated\n');
      expect(lstatSync(s.realPath(dup.path)).ino).toBe(lstatSync(join(lowers[0]!.root, 'nix/store', dup.path.baseName)).ino);
      // Stale-file-handle: re-adding right after works, because strata remounted by itself.
      const again = await s.addText('dup', 'duplicated\n', []);
      expect(again.path.equals(dup.path)).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('stale-file-handle after a crash: a remount owed by a killed process is made at the next open', async () => {
    const { dir, lowers, store } = await setup();
    const dup = await store.addText('dup', 'duplicated\n', []);
    await store.close();
    await addToLower(lowers[0]!.root, 'dup', 'duplicated\n');
    const s = await openLayered(`layered://${dir}`, dir);
    const merged = s.realPath(dup.path);
    expect(readFileSync(merged, 'utf8')).toBe('duplicated\n'); // the overlay caches the upper copy
    // As a GC killed between deleting the upper copy and remounting: the files go, no remount.
    s.deleteObjectFiles(dup.path);
    await s.close();
    const states: MountState[] = [];
    const again = await openLayered(`layered://${dir}`, dir, { onMount: (m) => states.push(m) });
    try {
      expect(states.map((m) => [m.action, m.reason])).toEqual([['remounted', 'a deletion from the upper layer was not followed by a remount']]);
      expect(lstatSync(merged).ino).toBe(lstatSync(join(lowers[0]!.root, 'nix/store', dup.path.baseName)).ino);
    } finally {
      await again.close();
    }
    const third: MountState[] = [];
    await (await openLayered(`layered://${dir}`, dir, { onMount: (m) => third.push(m) })).close();
    expect(third.map((m) => m.action)).toEqual(['none']);
  });

  it('gc: a rooted path survives; without the root GC empties the upper layer', async () => {
    const { dir, lowers, store, hashes } = await setup();
    const { top } = lowers[0]!.paths;
    const mine = await store.addText('mine', `uses ${store.storeDir.print(top)}`, [top]);
    await store.close();
    const root = join(dir, 'nix/var/nix/gcroots/foo');
    symlinkSync(join('/nix/store', mine.path.baseName), root);
    const uri = `layered://${dir}`;
    expect(await strataOk(['--store', uri, 'query', '--roots', `/nix/store/${mine.path.baseName}`])).toContain(root);
    expect(await strataOk(['--store', uri, 'gc', '--print-live'])).toContain(mine.path.baseName);
    expect(await strataOk(['--store', uri, 'gc', '--print-dead'])).not.toContain(mine.path.baseName);
    const del = await runStrata(['--store', uri, 'delete', `/nix/store/${mine.path.baseName}`]);
    expect(del.code).toBe(1);
    expect(del.stderr).toMatch(/since it is still alive/);
    await strataOk(['--store', uri, 'gc']);
    expect(readFileSync(join(dir, 'nix/store', mine.path.baseName), 'utf8')).toContain('uses');
    (await import('node:fs')).unlinkSync(root);
    await strataOk(['--store', uri, 'gc']);
    expect(readdirSync(join(dir, 'upper')).filter((n) => !n.startsWith('.'))).toEqual([]);
    expect(hashTree(lowers[0]!.root)).toBe(hashes[0]);
  });

  it('verify: corruption of a copied-up lower path is reported; a lower-only path is not checked', async () => {
    const { dir, lowers, store } = await setup();
    const { top, dummy } = lowers[0]!.paths;
    try {
      expect(await store.isValidPath(top)).toBe(true);
      expect((await store.verify({ checkContents: true })).ok).toBe(true);
    } finally {
      await store.close();
    }
    for (const p of [top, dummy]) {
      const f = join(lowers[0]!.root, 'nix/store', p.baseName);
      chmodSync(f, 0o644);
      appendFileSync(f, 'corrupted');
    }
    const r = await runStrata(['--store', `layered://${dir}`, 'verify', '--check-contents']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`path '/nix/store/${top.baseName}' was modified`);
    expect(r.stderr).not.toContain(dummy.baseName);
  });

  it('optimise: an upper copy of a path the lower gained is removed', async () => {
    const { dir, lowers, store } = await setup();
    const dup = await store.addText('dup', 'duplicated\n', []);
    await store.close();
    await addToLower(lowers[0]!.root, 'dup', 'duplicated\n');
    await strataOk(['--store', `layered://${dir}`, 'optimise']);
    expect(existsSync(join(dir, 'upper', dup.path.baseName))).toBe(false);
    expect(readFileSync(join(dir, 'nix/store', dup.path.baseName), 'utf8')).toBe('duplicated\n');
    const s = await openLayered(`layered://${dir}`, dir);
    try {
      expect(await s.upper.isValidPath(dup.path)).toBe(true); // D1: the row stays.
    } finally {
      await s.close();
    }
  });

  it('real Nix verifies the mounted layered store, and a lower made by real Nix works', async () => {
    const work = tempDir();
    const lowerRoot = join(work, 'nixlower');
    writeFileSync(join(work, 'f.txt'), 'made by nix\n');
    const added = runNix('nix-store', ['--store', lowerRoot, '--add', join(work, 'f.txt')]).stdout.trim();
    const dir = join(work, 'layered');
    const store = await initLayered(dir, [lowerRoot]);
    try {
      const p = store.storeDir.parse(added);
      expect(await store.isValidPath(p)).toBe(true);
      await store.addText('mine', `uses ${added}`, [p]);
    } finally {
      await store.close();
    }
    const v = runNix('nix-store', ['--store', dir, '--verify', '--check-contents']);
    expect(v.code, v.stderr).toBe(0);
    const info = JSON.parse(runNix('nix', ['path-info', '--store', dir, '--json', '-r', added]).stdout);
    expect(info[0].path).toBe(added);
  });
});

describe.runIf(isRoot)('layered store: three lowers', () => {
  it('answers from the highest-priority lower, copies up from any, deletes per layer', async () => {
    const { dir, lowers, store, hashes } = await setup(3);
    try {
      // The same path in lower1 and lower2: lower1 answers.
      const shared = 'shared contents\n';
      await store.close();
      await addToLower(lowers[1]!.root, 'shared', shared);
      await addToLower(lowers[2]!.root, 'shared', shared);
      const s = await openLayered(`layered://${dir}`, dir);
      try {
        const p = s.storeDir.makeTextPath('shared', (await import('../../src/core/hash.js')).Hash.of('sha256', shared));
        expect((await s.queryPathInfo(p))?.layer).toBe('lower1');
        const { top } = lowers[2]!.paths;
        expect((await s.queryPathInfo(top))?.layer).toBe('lower2');
        const mine = await s.addText('mine', 'x', [top, lowers[0]!.paths.top]);
        s.upper.tempRoots?.close(); // Let this process delete what it added.
        expect(await s.upper.isValidPath(lowers[2]!.paths.leaf)).toBe(true);
        expect(readdirSync(join(dir, 'upper'))).toEqual([mine.path.baseName]);
        const again = await s.addText('dummy', 'dummy contents\n', []);
        expect((await s.queryPathInfo(again.path))?.layer).toBe('lower0');
        const layers = JSON.parse(await strataOk(['--store', `layered://${dir}`, '--json', 'layers']));
        expect(layers.map((l: { name: string }) => l.name)).toEqual(['upper', 'lower0', 'lower1', 'lower2']);
        await s.deletePaths([mine.path]);
        expect(readdirSync(join(dir, 'upper'))).toEqual([]);
        const v = runNix('nix-store', ['--store', dir, '--verify', '--check-contents']);
        expect(v.code, v.stderr).toBe(0);
      } finally {
        await s.close();
      }
    } finally {
      await store.close().catch(() => undefined);
    }
    expect(hashTree(lowers[0]!.root)).toBe(hashes[0]);
  });

  it('copies up a member two lowers hold from the one whose files show, not from the referrer\'s lower', async () => {
    const { dir, lowers, store } = await setup(3);
    await store.close();
    // One output built twice, not reproducibly: lower0 and lower2 hold different bytes under one name.
    const dep = '/nix/store/dbdm1c9f4xd8p9s0dykwlajbc49l9g88-y';
    await addBuilt(lowers[0]!.root, dep, 'built on machine 0\n');
    const y = await addBuilt(lowers[2]!.root, dep, 'built on machine 2\n');
    const x = await addBuilt(lowers[2]!.root, '/nix/store/bwais6g23b7w2yj0b28fczcwxm3f8r7d-x', `uses ${dep}\n`, [y]);
    const hashes = lowers.map((l) => hashTree(l.root));
    const s = await openLayered(`layered://${dir}`, dir);
    try {
      const shown = await s.queryPathInfo(y);
      expect(shown?.layer).toBe('lower0');
      expect(await s.isValidPath(x)).toBe(true); // copies up x's closure
      expect((await s.upper.queryPathInfo(y))?.narHash.equals(shown!.narHash)).toBe(true);
      const v = runNix('nix-store', ['--store', dir, '--verify', '--check-contents']);
      expect(v.code, v.stderr).toBe(0);
    } finally {
      await s.close();
    }
    expect(lowers.map((l) => hashTree(l.root))).toEqual(hashes);
  });
});

