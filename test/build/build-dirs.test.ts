/** The run's build dirs (src/build/build-dirs.ts): Nix's names and places, released out of the way. */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { BuildDirs } from '../../src/build/build-dirs.js';
import { tempDir } from '../support/tmp.js';

describe('build dirs', () => {
  let dirs: BuildDirs | undefined;
  let tmp: string;
  const oldTmp = process.env['TMPDIR'];
  beforeEach(() => {
    tmp = tempDir();
    process.env['TMPDIR'] = tmp;
  });
  afterEach(() => {
    dirs?.close();
    dirs = undefined;
    if (oldTmp === undefined) delete process.env['TMPDIR'];
    else process.env['TMPDIR'] = oldTmp;
  });

  it('makes $TMPDIR/nix-build-<name>-<n>, mode 0700, n the smallest free (as Nix 2.8 names them)', () => {
    dirs = new BuildDirs();
    // One some other process (real Nix, another strata) holds.
    mkdirSync(join(tmp, 'nix-build-x.drv-0'));
    const a = dirs.acquire('x.drv');
    const b = dirs.acquire('x.drv');
    expect([a, b]).toEqual([join(tmp, 'nix-build-x.drv-1'), join(tmp, 'nix-build-x.drv-2')]);
    expect(statSync(a).mode & 0o7777).toBe(0o700);
    expect(readdirSync(a)).toEqual([]);
  });

  it('release moves a dir out of its name (free again at once), keeping what is in it for the caller to remove', () => {
    dirs = new BuildDirs();
    const a = dirs.acquire('a.drv');
    writeFileSync(join(a, 'left'), 'x');
    const log = dirs.rawLog(a);
    expect(dirname(log)).not.toBe(tmp);
    const moved = dirs.release(a);
    expect(existsSync(a)).toBe(false);
    expect(readFileSync(join(moved, 'left'), 'utf8')).toBe('x');
    expect(dirs.acquire('a.drv')).toBe(a);
    expect(readdirSync(a)).toEqual([]);
  });

  it('removes its private dir when closed; build dirs still held are the caller\'s', () => {
    dirs = new BuildDirs();
    const a = dirs.acquire('a.drv');
    const b = dirs.acquire('b.drv');
    writeFileSync(dirs.rawLog(b), 'log');
    dirs.release(b);
    dirs.close();
    expect(readdirSync(tmp)).toEqual(['nix-build-a.drv-0']);
    expect(existsSync(a)).toBe(true);
  });
});
