/**
 * The environment cache's stat stamps (src/env/env-cache.ts): a spec or index whose stat is as
 * recorded is not hashed (node:crypto is not even loaded on the fresh path), and any change to
 * its bytes, even one that keeps its size and mtime, still makes the cache stale.
 */
import { readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { beforeAll, describe, expect, it } from 'vitest';

import { envCachePath, type EnvCacheFile } from '../../src/env/env-cache.js';
import { ensureBuilt, runStrata, runStrataListingModules } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { makePackageLower, type PackageRecipe } from './fixtures.js';

const PACKAGES: PackageRecipe[] = [
  { name: 'hello-2.12', bin: { hello: 'Hello, world!' } },
  { name: 'gnumake-4.4', bin: { make: 'GNU Make 4.4' } },
];

beforeAll(() => ensureBuilt(), 120_000);

// A whole second, so that utimes (which takes a double) can set it again exactly.
const MTIME = 1_700_000_000;

/** Rewrites `file` with `text` (same length) and puts its mtime back: only ctime tells. */
function sneakyEdit(file: string, text: string): void {
  expect(statSync(file, { bigint: true }).mtimeNs).toBe(BigInt(MTIME) * 1_000_000_000n);
  expect(text.length).toBe(statSync(file).size);
  writeFileSync(file, text);
  utimesSync(file, MTIME, MTIME);
}

describe('strata env cache stat stamps', () => {
  it('answers a fresh cache without node:crypto, and still sees same-size, same-mtime edits', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    await makePackageLower(root, PACKAGES);
    const index = join(root, 'nix', 'var', 'nix', 'strata-packages.json');
    const spec = join(work, 'replit.nix');
    writeFileSync(spec, '{ pkgs }: {\n  deps = [ pkgs.hello ];\n}\n');
    for (const f of [spec, index]) utimesSync(f, MTIME, MTIME);
    // Files changed within the last second are not stamped (same clock tick): let them age.
    await sleep(1100);

    const built = await runStrata(['env', spec, '--store', root]);
    expect(built.code, built.stderr).toBe(0);
    const cache = JSON.parse(readFileSync(envCachePath(spec), 'utf8')) as EnvCacheFile;
    expect(cache.stats?.map((s) => s.file)).toEqual([spec, index]);

    const { run: fresh, modules } = await runStrataListingModules(['env', spec, '--store', root]);
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(fresh.stderr).toBe('');
    expect(fresh.stdout.toString()).toBe(built.stdout.toString());
    expect(modules).not.toContain('NativeModule crypto');

    // Same length, mtime put back: the stat differs only by ctime, and that is enough.
    sneakyEdit(spec, '{ pkgs }: {\n  deps = [ pkgs.hellp ];\n}\n');
    const edited = await runStrata(['env', spec, '--store', root]);
    expect(edited.stderr).toMatch(/^environment cache is stale: replit.nix changed; rebuilding\n/);

    // Back as it was: hashed (its stat changed), equal to the cache, so fresh again.
    writeFileSync(spec, '{ pkgs }: {\n  deps = [ pkgs.hello ];\n}\n');
    const back = await runStrata(['env', spec, '--store', root]);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stderr).toBe('');
    const text = readFileSync(index, 'utf8');
    sneakyEdit(index, text.replace('hello', 'hellp'));
    const reindexed = await runStrata(['env', spec, '--store', root]);
    expect(reindexed.stderr).toMatch(
      /^environment cache is stale: package index '.*strata-packages.json' changed; rebuilding\n/,
    );
  }, 60_000);

  it('stamps a spec whose stat is missing or out of date at the first fresh check a second later', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    await makePackageLower(root, PACKAGES);
    const spec = join(work, 'replit.nix');
    const text = '{ pkgs }: {\n  deps = [ pkgs.hello ];\n}\n';
    writeFileSync(spec, text);
    const built = await runStrata(['env', spec, '--store', root]);
    expect(built.code, built.stderr).toBe(0);
    const stampOf = (file: string) =>
      (JSON.parse(readFileSync(envCachePath(spec), 'utf8')) as EnvCacheFile).stats?.find((s) => s.file === file);
    // The same bytes written again (as an editor saving an unchanged file): the stat differs.
    writeFileSync(spec, text);
    const now = () => String(statSync(spec, { bigint: true }).ctimeNs);
    expect(stampOf(spec)?.ctimeNs).not.toBe(now());
    await sleep(1100);
    const later = await runStrata(['env', spec, '--store', root]);
    expect([later.code, later.stderr]).toEqual([0, '']);
    expect(later.stdout.toString()).toBe(built.stdout.toString());
    expect(stampOf(spec)?.ctimeNs).toBe(now());

    // From then on the spec is not hashed: node:crypto is not loaded.
    const { run: fresh, modules } = await runStrataListingModules(['env', spec, '--store', root]);
    expect([fresh.code, fresh.stderr]).toEqual([0, '']);
    expect(modules).not.toContain('NativeModule crypto');
    // And an edit is still seen.
    writeFileSync(spec, '{ pkgs }: {\n  deps = [ pkgs.hellp ];\n}\n');
    const edited = await runStrata(['env', spec, '--store', root]);
    expect(edited.stderr).toMatch(/^environment cache is stale: replit.nix changed; rebuilding\n/);
  }, 60_000);
});
