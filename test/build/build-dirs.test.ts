/** The run's build dirs (src/build/build-dirs.ts): Nix's names, reuse of clean dirs only. */
import { chmodSync, existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { BuildDirs } from '../../src/build/build-dirs.js';

describe('build dirs', () => {
  let dirs: BuildDirs | undefined;
  afterEach(() => dirs?.close());

  it('names dirs nix-build-<name>-<n>, n the smallest free among running builds', () => {
    dirs = new BuildDirs();
    const a = dirs.acquire('x.drv');
    const b = dirs.acquire('x.drv');
    expect([a, b].map((d) => d.slice(d.lastIndexOf('/') + 1))).toEqual([
      'nix-build-x.drv-0',
      'nix-build-x.drv-1',
    ]);
    expect(statSync(a).mode & 0o7777).toBe(0o700);
    expect(dirs.release(a)).toBeUndefined();
    expect(dirs.acquire('x.drv')).toBe(a);
  });

  it('reuses an empty dir by renaming it (no rmdir, no mkdir) for the next build', () => {
    dirs = new BuildDirs();
    const a = dirs.acquire('a.drv');
    const ino = statSync(a).ino;
    expect(dirs.release(a)).toBeUndefined();
    const b = dirs.acquire('b.drv');
    expect(b.endsWith('/nix-build-b.drv-0')).toBe(true);
    expect(statSync(b).ino).toBe(ino);
    expect(existsSync(a)).toBe(false);
  });

  it('does not reuse a dir a builder left files in or changed the mode of; moves it out of the way', () => {
    dirs = new BuildDirs();
    const a = dirs.acquire('a.drv');
    const b = dirs.acquire('b.drv');
    writeFileSync(`${a}/left`, 'x');
    chmodSync(b, 0o755);
    const asideA = dirs.release(a);
    const asideB = dirs.release(b);
    expect(asideA).toBeDefined();
    expect(asideB).toBeDefined();
    expect(readdirSync(asideA!)).toEqual(['left']);
    // Their names are free again, and the next dirs are fresh.
    const a2 = dirs.acquire('a.drv');
    expect(a2).toBe(a);
    expect(readdirSync(a2)).toEqual([]);
    expect(statSync(dirs.acquire('b.drv')).mode & 0o7777).toBe(0o700);
  });

  it('removes everything when closed', () => {
    dirs = new BuildDirs();
    const a = dirs.acquire('a.drv');
    writeFileSync(`${a}/left`, 'x');
    dirs.close();
    expect(existsSync(dirname(a))).toBe(false);
    dirs = undefined;
  });
});
