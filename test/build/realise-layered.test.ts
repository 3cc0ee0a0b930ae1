/**
 * Builds through a layered store: an output a lower already holds is registered by copy-up
 * without running the builder and without a byte in the upper layer; a missing one is built and
 * lands in the upper layer only.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { realiseOrThrow } from '../../src/build/index.js';
import { initLayered } from '../../src/store/layered/open-layered.js';
import { isRoot, unmountUnder } from '../support/mounts.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { addShDrv, openChroot } from './helpers.js';

describe.runIf(isRoot)('realise: layered store', () => {
  it('reuses a lower’s output without building and builds the rest into the upper layer', async () => {
    const work = tempDir();
    const runs = join(work, 'runs');
    writeFileSync(runs, '');
    const lowerRoot = join(work, 'lower');
    const lower = await openChroot(lowerRoot);
    const lowerDrv = await addShDrv(
      lower,
      'in-lower',
      `echo lower >> ${runs}; echo built-below > $out`,
    );
    const [below] = await realiseOrThrow(lower, [lowerDrv]);
    const belowOut = below!.get('out')!;
    const userDrv = await addShDrv(
      lower,
      'in-upper',
      `echo upper >> ${runs}; read x < ${lower.storeDir.print(belowOut)}; echo "above on $x" > $out`,
      {
        inputDrvs: new Map([[lowerDrv.baseName, ['out']]]),
      },
    );
    await lower.close();
    expect(readFileSync(runs, 'utf8')).toBe('lower\n');

    const dir = join(work, 'layered');
    const store = await initLayered(dir, [lowerRoot]);
    try {
      // In the lower: registered by copy-up, builder not run, upper layer untouched.
      const [fromLower] = await realiseOrThrow(store, [lowerDrv]);
      expect(fromLower!.get('out')!.equals(belowOut)).toBe(true);
      expect(readFileSync(runs, 'utf8')).toBe('lower\n');
      expect(readdirSync(join(dir, 'upper'))).toEqual([]);
      expect(await store.upper.isValidPath(belowOut)).toBe(true);

      // Not in the lower: built, through the merged dir, into the upper layer only.
      const [built] = await realiseOrThrow(store, [userDrv]);
      const out = built!.get('out')!;
      expect(readFileSync(runs, 'utf8')).toBe('lower\nupper\n');
      expect(readdirSync(join(dir, 'upper'))).toEqual([out.baseName]);
      expect(existsSync(join(lowerRoot, 'nix/store', out.baseName))).toBe(false);
      expect(readFileSync(store.realPath(out), 'utf8')).toBe('above on built-below\n');
      const info = (await store.queryPathInfo(out))!;
      expect(info.layer).toBe('upper');
      expect(info.references.map((r) => r.baseName)).toEqual([]);
      expect(info.deriver?.equals(userDrv)).toBe(true);
    } finally {
      await store.close();
      unmountUnder(work);
    }
    if (haveNix()) {
      // Real Nix accepts the lower (which strata never wrote to during the layered builds).
      const v = runNix('nix-store', ['--store', lowerRoot, '--verify', '--check-contents']);
      expect(v.code, v.stderr).toBe(0);
    }
  });

  it('builds several derivations in one run into the upper layer (outputs copied out of the build overlay)', async () => {
    const work = tempDir();
    const lowerRoot = join(work, 'lower');
    const lower = await openChroot(lowerRoot);
    await lower.addText('unrelated', 'x', []);
    await lower.close();
    const dir = join(work, 'layered');
    const store = await initLayered(dir, [lowerRoot]);
    try {
      const first = await addShDrv(store, 'first', 'echo one > $out');
      const firstOut = (await store.queryDerivationOutputs(first)).get('out')!;
      const second = await addShDrv(
        store,
        'second',
        `read x < ${store.storeDir.print(firstOut)}; echo "$x two" > $out`,
        {
          inputDrvs: new Map([[first.baseName, ['out']]]),
        },
      );
      const third = await addShDrv(store, 'third', 'echo three > $out');
      const [s, t] = await realiseOrThrow(store, [second, third], { jobs: 2 });
      expect(readFileSync(store.realPath(s!.get('out')!), 'utf8')).toBe('one two\n');
      expect(readFileSync(store.realPath(t!.get('out')!), 'utf8')).toBe('three\n');
      const upper = readdirSync(join(dir, 'upper'));
      for (const p of [firstOut, s!.get('out')!, t!.get('out')!])
        expect(upper).toContain(p.baseName);
      expect(readdirSync(join(dir, 'nix/var/nix/builds'))).toEqual([]);
    } finally {
      await store.close();
      unmountUnder(work);
    }
  });
});
