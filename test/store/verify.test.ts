import { appendFileSync, chmodSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { collectGarbage } from '../../src/store/local/gc.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { optimiseStore } from '../../src/store/local/optimise.js';
import { verifyStore } from '../../src/store/local/verify.js';
import { openStore } from '../../src/store/open.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

async function withStore<T>(uri: string, fn: (s: LocalStore) => Promise<T>): Promise<T> {
  const s = (await openStore(uri)) as LocalStore;
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

describe('verifyStore()', () => {
  it('passes on an intact store and finds a modified file, in Nix\'s words', async () => {
    const root = join(tempDir(), 'store');
    const p = await withStore(root, async (s) => ({
      a: await s.addText('a', 'original', []),
      b: await s.addText('b', 'untouched', []),
    }));
    const clean = await withStore(root, (s) => verifyStore(s, { checkContents: true }));
    expect(clean.ok).toBe(true);
    expect(clean.modified).toEqual([]);
    const file = join(root, 'nix/store', p.a.path.baseName);
    chmodSync(file, 0o644);
    appendFileSync(file, ' and then some');
    chmodSync(file, 0o444);
    // Without --check-contents nothing is hashed, so nothing is noticed.
    expect((await withStore(root, (s) => verifyStore(s))).ok).toBe(true);
    const r = await withStore(root, (s) => verifyStore(s, { checkContents: true }));
    expect(r.ok).toBe(false);
    expect(r.modified.map((x) => x.baseName)).toEqual([p.a.path.baseName]);
    expect(r.errors[0]).toMatch(new RegExp(`^path '/nix/store/${p.a.path.baseName}' was modified! expected hash 'sha256:${p.a.narHash.toNix32()}', got 'sha256:[0-9a-z]{52}'$`));
    // Real Nix agrees on what is wrong.
    const nix = runNix('nix-store', ['--store', root, '--verify', '--check-contents']);
    expect(nix.code).toBe(1);
    expect(nix.stderr).toContain(`path '/nix/store/${p.a.path.baseName}' was modified! expected hash 'sha256:${p.a.narHash.toNix32()}'`);
    // Repair needs a substituter; with none it says so and the problem stays.
    const rep = await withStore(root, (s) => verifyStore(s, { checkContents: true, repair: true }));
    expect(rep.ok).toBe(false);
    expect(rep.repaired).toEqual([]);
    expect(rep.errors.some((e) => e.startsWith(`cannot repair path '/nix/store/${p.a.path.baseName}'`))).toBe(true);
  });

  it('removes a missing path nothing refers to from the DB, as Nix does, and reports one with valid referrers', async () => {
    const root = join(tempDir(), 'store');
    const p = await withStore(root, async (s) => {
      const lone = await s.addText('lone', 'lone', []);
      const dep = await s.addText('dep', 'dep', []);
      const user = await s.addText('user', 'user', [dep.path]);
      return { lone, dep, user };
    });
    rmSync(join(root, 'nix/store', p.lone.path.baseName), { force: true });
    rmSync(join(root, 'nix/store', p.dep.path.baseName), { force: true });
    const r = await withStore(root, (s) => verifyStore(s));
    expect(r.missing.map((x) => x.name).sort()).toEqual(['dep', 'lone']);
    expect(r.invalidated.map((x) => x.name)).toEqual(['lone']);
    expect(r.ok).toBe(false);
    expect(r.errors).toEqual([`path '/nix/store/${p.dep.path.baseName}' disappeared, but it still has valid referrers!`]);
    await withStore(root, async (s) => {
      expect(await s.isValidPath(p.lone.path)).toBe(false);
      expect(await s.isValidPath(p.dep.path)).toBe(true);
    });
    // Nix judges the same store the same way (exit 1 for the path still referred to).
    expect(runNix('nix-store', ['--store', root, '--verify']).code).toBe(1);
    // Once the referrer is gone too, both can go and the store is consistent again.
    rmSync(join(root, 'nix/store', p.user.path.baseName), { force: true });
    const r2 = await withStore(root, (s) => verifyStore(s));
    expect(r2.ok).toBe(true);
    expect(r2.invalidated.map((x) => x.name)).toEqual(['user', 'dep']);
    expect(runNix('nix-store', ['--store', root, '--verify', '--check-contents']).code).toBe(0);
  });

  it('verifies a read-only store without writing a lock file or changing the DB', async () => {
    const root = join(tempDir(), 'store');
    const p = await withStore(root, (s) => s.addText('gone', 'gone', []));
    rmSync(join(root, 'nix/var/nix/gc.lock'), { force: true });
    rmSync(join(root, 'nix/store', p.path.baseName));
    const r = await withStore(`local?root=${root}&read-only=true`, (s) => verifyStore(s, { checkContents: true }));
    expect(r.ok).toBe(false);
    expect(r.missing.map((x) => x.name)).toEqual(['gone']);
    expect(r.invalidated).toEqual([]);
    expect(existsSync(join(root, 'nix/var/nix/gc.lock'))).toBe(false);
    expect(await withStore(root, (s) => s.isValidPath(p.path))).toBe(true);
  });

  it('real Nix verifies the store after strata\'s gc and optimise', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const src = join(work, 'src');
    mkdirSync(join(src, 'd'), { recursive: true });
    writeFileSync(join(src, 'd', 'same'), 'same bytes');
    writeFileSync(join(src, 'same'), 'same bytes');
    const keep = await withStore(root, async (s) => {
      const t = await s.addPath(src);
      await s.addText('junk', 'same bytes', []);
      return s.addText('keep', 'k', [t.path]);
    });
    symlinkSync(`/nix/store/${keep.path.baseName}`, join(root, 'nix/var/nix/gcroots', 'keep'));
    await withStore(root, (s) => optimiseStore(s));
    const gc = await withStore(root, (s) => collectGarbage(s));
    expect(gc.deleted.map((x) => x.name)).toEqual(['junk']);
    expect((await withStore(root, (s) => verifyStore(s, { checkContents: true }))).ok).toBe(true);
    const nix = runNix('nix-store', ['--store', root, '--verify', '--check-contents']);
    expect(nix.stderr).not.toContain('modified');
    expect(nix.code).toBe(0);
  });
});

describe('strata verify (CLI)', () => {
  it('exits 1 and lists the problem, with --json an object', async () => {
    ensureBuilt();
    const root = join(tempDir(), 'store');
    const p = await withStore(root, (s) => s.addText('x', 'x', []));
    const ok = await runStrata(['--store', root, 'verify', '--check-contents']);
    expect(ok.code).toBe(0);
    const file = join(root, 'nix/store', p.path.baseName);
    chmodSync(file, 0o644);
    writeFileSync(file, 'y');
    const bad = await runStrata(['--store', root, 'verify', '--check-contents']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`error: path '/nix/store/${p.path.baseName}' was modified!`);
    const json = await runStrata(['--store', root, '--json', 'verify', '--check-contents']);
    expect(json.code).toBe(1);
    const obj = JSON.parse(json.stdout.toString());
    expect(obj.ok).toBe(false);
    expect(obj.modified).toEqual([`/nix/store/${p.path.baseName}`]);
    expect(obj.missing).toEqual([]);
  });
});
