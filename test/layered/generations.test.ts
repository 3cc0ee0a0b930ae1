/**
 * Lowers change: a big disk is redeployed under live uppers. strata notices the new generation,
 * rescues what the upper relies on from the old one before switching, and `fsck` names whatever
 * is still wrong (dangling rows, whiteouts over lower paths, duplicates).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import type { LocalStore } from '../../src/store/local/local-store.js';
import { fsck } from '../../src/store/layered/fsck.js';
import { initLayered, type MountState, openLayered } from '../../src/store/layered/open-layered.js';
import { openStore } from '../../src/store/open.js';
import { runStrata, strataOk } from '../support/cli.js';
import { addBuilt, makeLower } from '../support/layered.js';
import { isRoot } from '../support/mounts.js';
import { runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

/** Publishes a generation marker the way a big-disk builder does. */
function setGeneration(root: string, gen: string): void {
  writeFileSync(join(root, 'nix/var/nix/strata-generation'), gen);
}

function bindMount(from: string, to: string): void {
  const r = spawnSync('mount', ['--bind', from, to]);
  if (r.status !== 0) throw new Error(`bind mount failed: ${r.stderr}`);
}

describe.runIf(isRoot)('changing lowers', () => {
  it('a new generation that drops paths the upper needs: rescued from the old one, nothing lost', async () => {
    const work = tempDir();
    // Generation 1 lives in gen1/, attached at bigdisk/ (as a platform attaches a disk image).
    const gen1 = await makeLower(join(work, 'gen1'));
    setGeneration(gen1.root, 'gen-1');
    // Generation 2 lacks the top/mid/leaf closure but has something new.
    const gen2Root = join(work, 'gen2');
    const g2 = (await openStore(gen2Root)) as LocalStore;
    const fresh = await g2.addText('new-in-gen2', 'new\n', []);
    await g2.addText('dummy', 'dummy contents\n', []);
    await g2.close();
    setGeneration(gen2Root, 'gen-2');
    const bigdisk = join(work, 'bigdisk');
    mkdirSync(bigdisk);
    bindMount(gen1.root, bigdisk);

    const dir = join(work, 'layered');
    const { top, mid, leaf } = gen1.paths;
    let store = await initLayered(dir, [bigdisk]);
    const mine = await store.addText('mine', `uses ${store.storeDir.print(top)}`, [top]);
    await store.close();

    // Redeploy: generation 2 is attached over the same path. The mounted overlay still sees gen 1.
    bindMount(gen2Root, bigdisk);
    const states: { action: string; rescued: string[]; lost: string[] }[] = [];
    store = await openLayered(`layered://${dir}`, dir, { onMount: (s) => states.push(s) });
    try {
      expect(states[0]!.action).toBe('remounted');
      expect(states[0]!.rescued.sort()).toEqual([top, mid, leaf].map((p) => store.storeDir.print(p)).sort());
      expect(states[0]!.lost).toEqual([]);
      // The upper's data and everything it refers to are intact; the new generation shows through.
      expect(readFileSync(store.realPath(mine.path), 'utf8')).toContain('uses');
      expect(readFileSync(store.realPath(top), 'utf8')).toContain('top uses');
      expect(await store.isValidPath(fresh.path)).toBe(true);
      expect((await store.queryPathInfo(fresh.path))?.layer).toBe('lower0');
      expect((await store.queryPathInfo(top))?.layer).toBe('upper');
      expect((await fsck(store)).problems).toEqual([]);
    } finally {
      await store.close();
    }
    const v = runNix('nix-store', ['--store', dir, '--verify', '--check-contents']);
    expect(v.code, v.stderr).toBe(0);
  });

  it('a switch of generations killed midway: finished rescue copies are used as they are, before or after the unmount', async () => {
    const work = tempDir();
    const gen1 = await makeLower(join(work, 'gen1'));
    const tree = join(work, 'tree');
    mkdirSync(join(tree, 'bin'), { recursive: true });
    writeFileSync(join(tree, 'bin', 'tool'), 'tool\n');
    const g1 = (await openStore(gen1.root)) as LocalStore;
    const pkg = (await g1.addPath(tree, { name: 'pkg' })).path;
    await g1.close();
    setGeneration(gen1.root, 'gen-1');
    const gen2 = await makeLower(join(work, 'gen2'), 'two');
    setGeneration(gen2.root, 'gen-2');
    const bigdisk = join(work, 'bigdisk');
    mkdirSync(bigdisk);
    bindMount(gen1.root, bigdisk);
    // Two users over the same disk, each relying on `pkg`, which generation 2 drops.
    const dirs = ['before-unmount', 'after-unmount'].map((n) => join(work, n));
    for (const dir of dirs) {
      const s = await initLayered(dir, [bigdisk]);
      await s.addText('mine', `uses ${s.storeDir.print(pkg)}`, [pkg]);
      await s.close();
    }
    bindMount(gen2.root, bigdisk);
    // Killed after copying `pkg` out of the old mount (which still shows generation 1) ...
    for (const dir of dirs) {
      mkdirSync(join(dir, 'rescue'));
      spawnSync('cp', ['-a', join(dir, 'nix/store', pkg.baseName), join(dir, 'rescue', pkg.baseName)]);
      mkdirSync(join(dir, 'rescue', `.part-${gen1.paths.dummy.baseName}`)); // an unfinished copy
    }
    // ... and, for the second user, also after unmounting it.
    expect(spawnSync('umount', [join(dirs[1]!, 'nix/store')]).status).toBe(0);
    for (const dir of dirs) {
      const states: MountState[] = [];
      const s = await openLayered(`layered://${dir}`, dir, { onMount: (m) => states.push(m) });
      try {
        expect(states[0]!.rescued).toEqual([s.storeDir.print(pkg)]);
        expect(existsSync(join(dir, 'rescue'))).toBe(false);
        expect(readFileSync(join(s.realPath(pkg), 'bin', 'tool'), 'utf8')).toBe('tool\n');
        expect((await fsck(s)).problems).toEqual([]);
      } finally {
        await s.close();
      }
      const v = runNix('nix-store', ['--store', dir, '--verify', '--check-contents']);
      expect(v.code, v.stderr).toBe(0);
    }
  });

  it('a new generation that rebuilt a path the upper uses with other bytes: the bytes the upper row describes are kept', async () => {
    const work = tempDir();
    const gen1 = await makeLower(join(work, 'gen1'));
    const dep = '/nix/store/dbdm1c9f4xd8p9s0dykwlajbc49l9g88-y';
    const y = await addBuilt(gen1.root, dep, 'built for generation 1\n');
    setGeneration(gen1.root, 'gen-1');
    const gen2 = await makeLower(join(work, 'gen2'));
    await addBuilt(gen2.root, dep, 'built again for generation 2\n'); // not reproducible
    setGeneration(gen2.root, 'gen-2');
    const bigdisk = join(work, 'bigdisk');
    mkdirSync(bigdisk);
    bindMount(gen1.root, bigdisk);
    const dir = join(work, 'layered');
    let store = await initLayered(dir, [bigdisk]);
    await store.addText('mine', `uses ${dep}`, [y]);
    await store.close();
    bindMount(gen2.root, bigdisk);
    const states: MountState[] = [];
    store = await openLayered(`layered://${dir}`, dir, { onMount: (m) => states.push(m) });
    try {
      expect(states[0]!.rescued).toEqual([dep]);
      expect(readFileSync(store.realPath(y), 'utf8')).toBe('built for generation 1\n');
      const report = await fsck(store, { repair: true });
      expect(report.problems).toEqual([{ kind: 'duplicate', path: dep, detail: 'both the upper layer and lower0 hold it, with other contents: the upper copy is kept' }]);
      expect(report.repaired).toEqual([]);
      expect((await store.optimise()).filesLinked).toBe(0);
      expect(readFileSync(store.realPath(y), 'utf8')).toBe('built for generation 1\n');
    } finally {
      await store.close();
    }
    const v = runNix('nix-store', ['--store', dir, '--verify', '--check-contents']);
    expect(v.code, v.stderr).toBe(0);
  });

  it('a lower written as local?root=DIR has its generation tracked as one written as DIR', async () => {
    const work = tempDir();
    const lower = await makeLower(join(work, 'lower'));
    setGeneration(lower.root, 'gen-1');
    const dir = join(work, 'layered');
    await (await initLayered(dir, [`local?root=${lower.root}`])).close();
    expect(JSON.parse(readFileSync(join(dir, 'strata.json'), 'utf8')).lowers[0].generation).toBe('gen-1');
    setGeneration(lower.root, 'gen-2');
    const states: MountState[] = [];
    const s = await openLayered(`layered://${dir}`, dir, { onMount: (m) => states.push(m) });
    await s.close();
    expect(states.map((m) => [m.action, m.reason])).toEqual([['remounted', 'lower0 is now generation gen-2 (was gen-1)']]);
    const layers = JSON.parse(await strataOk(['--store', `layered://${dir}`, '--json', 'layers']));
    expect(layers[1].generation).toBe('gen-2');
  });

  it('processes that notice a new generation at once remount it once: no overlays stacked on one upper', async () => {
    const work = tempDir();
    const lower = await makeLower(join(work, 'lower'));
    const dir = join(work, 'layered');
    await (await initLayered(dir, [lower.root])).close();
    const merged = join(dir, 'nix/store');
    const mounts = () => readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((l) => l.split(' ')[1] === merged).length;
    for (let gen = 2; gen <= 4; gen++) {
      setGeneration(lower.root, `gen-${gen}`);
      const runs = await Promise.all([1, 2, 3].map(() => runStrata(['--store', `layered://${dir}`, 'path-info', `/nix/store/${lower.paths.top.baseName}`])));
      for (const r of runs) expect(r.code, r.stderr).toBe(0);
      expect(mounts()).toBe(1);
    }
  });

  it('fsck names dangling rows, their referrers, whiteouts and duplicates; --repair fixes what it can', async () => {
    const work = tempDir();
    const lower = await makeLower(join(work, 'lower'));
    const backup = join(work, 'backup');
    cpSync(lower.root, backup, { recursive: true });
    const dir = join(work, 'layered');
    let store = await initLayered(dir, [lower.root]);
    const { top, mid, dummy } = lower.paths;
    const mine = await store.addText('mine', `uses ${store.storeDir.print(top)}`, [top]);
    const dup = await store.addText('dup', 'dup\n', []);
    await store.close();

    // Behind strata's back: the lower loses `mid` (files and row), gains `dup`, and a whiteout
    // appears over `dummy` in the upper layer.
    const l = (await openStore(lower.root)) as LocalStore;
    await l.addText('dup', 'dup\n', []);
    l.db.db.prepare('DELETE FROM Refs WHERE reference = (SELECT id FROM ValidPaths WHERE path = ?)').run(l.storeDir.print(mid));
    l.db.invalidate(mid);
    spawnSync('rm', ['-rf', join(lower.root, 'nix/store', mid.baseName)]);
    await l.close();
    spawnSync('mknod', [join(dir, 'upper', dummy.baseName), 'c', '0', '0']);

    store = await openLayered(`layered://${dir}`, dir);
    try {
      const report = await fsck(store);
      const kinds = report.problems.map((p) => `${p.kind} ${p.path.slice(44)}`).sort();
      expect(kinds).toEqual([
        `dangling ${mid.name}`,
        `duplicate ${dup.path.name}`,
        `refers-to-dangling ${top.name}`,
        `whiteout ${dummy.name}`,
      ]);
      expect(existsSync(store.realPath(dummy))).toBe(false); // the whiteout hides the lower file
      expect(readdirSync(join(dir, 'upper')).sort()).toEqual([dummy.baseName, dup.path.baseName, mine.path.baseName].sort());
      const repaired = await fsck(store, { repair: true });
      expect(repaired.repaired.sort()).toEqual([dup.path, dummy].map((p) => store.storeDir.print(p)).sort());
      expect(repaired.unrepaired).toEqual([store.storeDir.print(mid)]);
      expect(readFileSync(store.realPath(dummy), 'utf8')).toBe('dummy contents\n');
      expect(readdirSync(join(dir, 'upper'))).toEqual([mine.path.baseName]);
    } finally {
      await store.close();
    }
    // With a substituter that has it (here: the pre-change copy of the lower), repair restores it.
    const cfg = JSON.parse(readFileSync(join(dir, 'strata.json'), 'utf8'));
    cfg.substituters = [`${backup}?read-only=true`];
    writeFileSync(join(dir, 'strata.json'), JSON.stringify(cfg));
    store = await openLayered(`layered://${dir}`, dir);
    try {
      const r = await fsck(store, { repair: true });
      expect(r.repaired).toEqual([store.storeDir.print(mid)]);
      expect(readFileSync(store.realPath(mid), 'utf8')).toContain('mid uses');
      expect((await fsck(store)).problems).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('fsck names a whiteout inside a lower path (a file deleted through the merged dir), and --repair brings it back', async () => {
    const work = tempDir();
    const lower = await makeLower(join(work, 'lower'));
    const tree = join(work, 'tree');
    mkdirSync(join(tree, 'sub'), { recursive: true });
    writeFileSync(join(tree, 'sub', 'f'), 'f\n');
    writeFileSync(join(tree, 'g'), 'g\n');
    const l = (await openStore(lower.root)) as LocalStore;
    const pkg = (await l.addPath(tree, { name: 'pkg' })).path;
    await l.close();
    const dir = join(work, 'layered');
    const store = await initLayered(dir, [lower.root]);
    try {
      expect(await store.isValidPath(pkg)).toBe(true); // a copied-up row: real Nix verifies it
      const merged = store.realPath(pkg);
      chmodSync(merged, 0o755);
      chmodSync(join(merged, 'sub'), 0o755);
      rmSync(join(merged, 'sub', 'f'));
      chmodSync(join(merged, 'sub'), 0o555);
      chmodSync(merged, 0o555);
      expect(runNix('nix-store', ['--store', dir, '--verify', '--check-contents']).code).not.toBe(0);
      const report = await fsck(store);
      expect(report.problems).toEqual([{ kind: 'whiteout', path: store.storeDir.print(pkg), detail: "the upper layer hides 'sub/f' of the copy in lower0" }]);
      const cli = await runStrata(['--store', `layered://${dir}`, 'fsck']);
      expect(cli.code).toBe(1);
      expect((await fsck(store, { repair: true })).repaired).toEqual([store.storeDir.print(pkg)]);
      expect(readFileSync(join(merged, 'sub', 'f'), 'utf8')).toBe('f\n');
      expect(readdirSync(join(dir, 'upper'))).not.toContain(pkg.baseName); // (real Nix made '.links')
      const v = runNix('nix-store', ['--store', dir, '--verify', '--check-contents']);
      expect(v.code, v.stderr).toBe(0);
    } finally {
      await store.close();
    }
  });
});

