/**
 * `strata realise` asks substituters before building (`--substituter`, `$STRATA_SUBSTITUTERS`,
 * a layered store's strata.json), and, as `nix-store -r`, makes a path that is not a derivation
 * valid by substitution.
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { realiseOrThrow } from '../../src/build/index.js';
import { copyPaths } from '../../src/store/copy.js';
import { openStore } from '../../src/store/open.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';
import { addShDrv, openChroot } from './helpers.js';

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('strata realise: substituters', () => {
  beforeAll(() => ensureBuilt(), 120_000);

  it('substitutes a derivation\'s output and a plain path instead of building; without a substituter a missing path is an error', async () => {
    const marker = join(tempDir(), 'built');
    const script = `echo > ${marker}; echo substituted-or-built > $out`;
    // A cache holding the output (built once, elsewhere).
    const cacheDir = tempDir();
    const origin = await openChroot(tempDir());
    let outPath: string;
    try {
      const drv = await addShDrv(origin, 'subst-me', script);
      const [outs] = await realiseOrThrow(origin, [drv]);
      const out = outs!.get('out')!;
      outPath = origin.storeDir.print(out);
      const cache = await openStore(`file://${cacheDir}?compression=none`);
      try {
        await copyPaths(origin, cache, [out], { recursive: true });
      } finally {
        await cache.close();
      }
    } finally {
      await origin.close();
    }
    rmSync(marker);

    const root = tempDir();
    const store = await openChroot(root);
    let drvPath: string;
    try {
      drvPath = store.storeDir.print(await addShDrv(store, 'subst-me', script));
    } finally {
      await store.close();
    }
    const cache = `file://${cacheDir}`;
    // A plain path with no substituter: not valid, nothing printed, one error line.
    const none = await runStrata(['--store', root, 'realise', outPath]);
    expect(none.code).toBe(1);
    expect(none.stdout.toString()).toBe('');
    expect(none.stderr.toString()).toBe(`error: Cannot realise '${outPath}': it is not valid and no substituter has it\n`);
    // The derivation, with the cache named on the command line: its output comes from the cache.
    const r = await runStrata(['--store', root, '--no-require-sigs', 'realise', '--substituter', cache, drvPath]);
    expect(r.stderr.toString()).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(`${outPath}\n`);
    expect(existsSync(marker), 'the builder did not run').toBe(false);
    // The plain path, now valid, is printed as it is, in the order given.
    const both = await runStrata(['--store', root, 'realise', outPath, drvPath]);
    expect(both.code).toBe(0);
    expect(both.stdout.toString()).toBe(`${outPath}\n${outPath}\n`);

    // A plain path into a fresh store, from $STRATA_SUBSTITUTERS.
    const root2 = tempDir();
    const viaEnv = await runStrata(['--store', root2, '--no-require-sigs', 'realise', outPath], { env: { STRATA_SUBSTITUTERS: cache } });
    expect(viaEnv.stderr.toString()).toBe('');
    expect(viaEnv.stdout.toString()).toBe(`${outPath}\n`);
    const check = await runStrata(['--store', root2, 'path-info', outPath]);
    expect(check.code).toBe(0);
    expect(existsSync(marker)).toBe(false);
  });
});
