import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { hashPath } from '../../src/fs/hash-path.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { optimiseStore } from '../../src/store/local/optimise.js';
import { verifyStore } from '../../src/store/local/verify.js';
import { openStore } from '../../src/store/open.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

async function withStore<T>(root: string, fn: (s: LocalStore) => Promise<T>): Promise<T> {
  const s = (await openStore(root)) as LocalStore;
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

function links(root: string): string[] {
  const dir = join(root, 'nix/store/.links');
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

/** Two trees sharing a 40 KB file and a symlink, plus a same-bytes-but-executable file. */
function makeTrees(work: string): { a: string; b: string } {
  const a = join(work, 'a');
  const b = join(work, 'b');
  mkdirSync(join(a, 'sub'), { recursive: true });
  mkdirSync(b);
  const shared = Buffer.alloc(40_000, 9);
  writeFileSync(join(a, 'sub', 'shared'), shared);
  writeFileSync(join(b, 'shared'), shared);
  writeFileSync(join(b, 'shared-x'), shared);
  chmodSync(join(b, 'shared-x'), 0o755);
  writeFileSync(join(a, 'only-a'), 'only in a');
  symlinkSync('sub/shared', join(a, 'link'));
  symlinkSync('sub/shared', join(b, 'link'));
  return { a, b };
}

describe('optimiseStore()', () => {
  it('hard-links identical files through .links without changing any NAR hash', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const t = makeTrees(work);
    const { a, b } = await withStore(root, async (s) => ({ a: await s.addPath(t.a), b: await s.addPath(t.b) }));
    const real = (base: string, ...rest: string[]) => join(root, 'nix/store', base, ...rest);
    expect(lstatSync(real(a.path.baseName, 'sub', 'shared')).ino).not.toBe(lstatSync(real(b.path.baseName, 'shared')).ino);

    const r = await withStore(root, (s) => optimiseStore(s));
    // b/shared and b/link become links to a's copies; the executable copy stays apart.
    expect(r).toEqual({ filesLinked: 2, bytesSaved: 40_000 + 'sub/shared'.length });
    const shared = lstatSync(real(b.path.baseName, 'shared'));
    expect(shared.ino).toBe(lstatSync(real(a.path.baseName, 'sub', 'shared')).ino);
    expect(shared.nlink).toBe(3);
    expect(lstatSync(real(b.path.baseName, 'link')).ino).toBe(lstatSync(real(a.path.baseName, 'link')).ino);
    expect(lstatSync(real(b.path.baseName, 'shared-x')).ino).not.toBe(shared.ino);
    // .links names are the nix32 NAR hashes of the single files (what Nix 2.8 names them).
    const want = await Promise.all(
      [['sub', 'shared'], ['only-a'], ['link']].map(async (rest) => (await hashPath(real(a.path.baseName, ...rest))).hash.toNix32()),
    );
    want.push((await hashPath(real(b.path.baseName, 'shared-x'))).hash.toNix32());
    expect(links(root)).toEqual(want.sort());
    // Directories we opened are canonical again.
    for (const d of [real(b.path.baseName), real(a.path.baseName, 'sub')]) {
      expect(lstatSync(d).mode & 0o7777).toBe(0o555);
      expect(lstatSync(d).mtimeMs).toBe(1000);
    }
    // No NAR hash moved.
    for (const info of [a, b]) expect((await hashPath(real(info.path.baseName))).hash.equals(info.narHash)).toBe(true);
    expect((await withStore(root, (s) => verifyStore(s, { checkContents: true }))).ok).toBe(true);
    expect(runNix('nix-store', ['--store', root, '--verify', '--check-contents']).code).toBe(0);
    // A second pass finds nothing left to do.
    expect(await withStore(root, (s) => optimiseStore(s))).toEqual({ filesLinked: 0, bytesSaved: 0 });
  });

  it('produces the same .links and the same sharing as nix-store --optimise on a copy', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const t = makeTrees(work);
    const paths = await withStore(root, async (s) => [await s.addPath(t.a), await s.addPath(t.b)]);
    const copy = join(work, 'copy');
    cpSync(root, copy, { recursive: true, verbatimSymlinks: true });
    await withStore(root, (s) => optimiseStore(s));
    const nix = runNix('nix-store', ['--store', copy, '--optimise']);
    expect(nix.code).toBe(0);
    expect(nix.stderr).toContain('freed by hard-linking 2 files');
    expect(links(root)).toEqual(links(copy));
    for (const name of links(root)) {
      expect(lstatSync(join(root, 'nix/store/.links', name)).nlink).toBe(lstatSync(join(copy, 'nix/store/.links', name)).nlink);
    }
    // And Nix's optimiser has nothing left to do on strata's result.
    const again = runNix('nix-store', ['--store', root, '--optimise']);
    expect(again.stderr).toContain('0.00 MiB freed by hard-linking 0 files');
    expect(paths).toHaveLength(2);
  });

  it('strata optimise prints what it saved', async () => {
    ensureBuilt();
    const work = tempDir();
    const root = join(work, 'store');
    const t = makeTrees(work);
    await withStore(root, async (s) => {
      await s.addPath(t.a);
      await s.addPath(t.b);
    });
    const r = await runStrata(['--store', root, 'optimise']);
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe('0.04 MiB freed by hard-linking 2 files\n');
    const j = await runStrata(['--store', root, '--json', 'optimise']);
    expect(JSON.parse(j.stdout.toString())).toEqual({ filesLinked: 0, bytesSaved: 0 });
  });
});
