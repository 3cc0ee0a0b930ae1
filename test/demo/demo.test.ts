/**
 * The README's first command, end to end: the demo's steps on real loop devices and overlays,
 * then a second run that reuses everything, then the documented clean-up.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { ensureBuilt, ROOT } from '../support/cli.js';
import { isRoot } from '../support/mounts.js';
import { tempDir } from '../support/tmp.js';

function demo(dir: string, ...args: string[]): { code: number; out: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist/demo/main.js'), ...args], { env: { ...process.env, STRATA_DEMO_DIR: dir }, encoding: 'utf8', timeout: 240_000 });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

describe.runIf(isRoot && spawnSync('mksquashfs', ['-version']).status === 0)('the built-in demo', () => {
  it('runs every step, reuses everything on a second run, and cleans up', { timeout: 300_000 }, () => {
    ensureBuilt();
    const dir = join(tempDir(), 'demo');
    const first = demo(dir);
    expect(first.code, first.out).toBe(0);
    expect(first.out).toMatch(/built .*bigdisk-gen-1-.*: 50 packages/);
    expect(first.out).toMatch(/6 packages, \d+ paths in the closure, 6 copied up from the big disk/);
    expect(first.out).toContain('package bytes: 0');
    expect(first.out).toContain('Hello, world!');
    expect(first.out).toContain('greetings, world, from libgreet');
    expect(first.out).toMatch(/in the upper layer: true; in the big disk: false/);
    expect(first.out).toContain('built in my own upper layer');
    expect(first.out).toMatch(/user store: remounted .*rescued 0, lost 0/);
    expect(first.out).toContain('strata fsck: clean');
    expect(first.out).toContain("the user's own package is still there: true");
    expect(first.out).toContain('sunny, 21 degrees');
    expect(readFileSync(join(dir, 'bigdisk/nix/var/nix/strata-generation'), 'utf8')).toMatch(/^gen-2-/);

    const second = demo(dir);
    expect(second.code, second.out).toBe(0);
    expect(second.out).toMatch(/reused .*gen-1-/);
    expect(second.out).toMatch(/reused .*gen-2-/);
    expect(second.out).toContain('answered from the fresh env cache without opening the store');

    const clean = demo(dir, 'clean');
    expect(clean.code, clean.out).toBe(0);
    expect(existsSync(dir)).toBe(false);
    expect(readFileSync('/proc/self/mounts', 'utf8')).not.toContain(dir);
  });
});
