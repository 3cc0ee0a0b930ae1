/**
 * Scheduling with real processes: two `strata realise` of one derivation build it once, and
 * `-j 2` runs two independent builds at the same time.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { ensureBuilt, runStrata } from '../support/cli.js';
import { haveNix, nixEnv } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { addShDrv, openChroot } from './helpers.js';

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('realise: concurrency', () => {
  it('two concurrent `strata realise` of the same derivation run the builder once and print the same output', async () => {
    ensureBuilt();
    const root = tempDir();
    const side = join(tempDir(), 'runs');
    const store = await openChroot(root);
    // The side-effect file is outside the store: the builder may write it, the overlay does not see it.
    const drv = await addShDrv(
      store,
      'once',
      `echo run >> ${side}; /bin/sleep 1; echo done > $out`,
    );
    await store.close();
    const [a, b] = await Promise.all([
      runStrata(['--store', root, 'realise', `/nix/store/${drv.baseName}`]),
      runStrata(['--store', root, 'realise', `/nix/store/${drv.baseName}`]),
    ]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect(a.stdout.toString()).toMatch(/^\/nix\/store\/[a-z0-9]{32}-once\n$/);
    expect(b.stdout.toString()).toBe(a.stdout.toString());
    expect(readFileSync(side, 'utf8')).toBe('run\n');
  });

  it('-j 2 runs two independent builds at once, -j 1 one after the other', async () => {
    ensureBuilt();
    const root = tempDir();
    const marks = tempDir();
    const store = await openChroot(root);
    const script = (n: string, tag: string): string =>
      `/bin/date +%s.%N > ${marks}/${tag}-${n}-start; /bin/sleep 0.7; /bin/date +%s.%N > ${marks}/${tag}-${n}-end; echo ${n} > $out`;
    const drvs: Record<string, string[]> = {};
    for (const tag of ['j1', 'j2'])
      drvs[tag] = [
        (await addShDrv(store, `${tag}-a`, script('a', tag))).baseName,
        (await addShDrv(store, `${tag}-b`, script('b', tag))).baseName,
      ];
    await store.close();
    const overlapOf = async (tag: string, jobs: number): Promise<number> => {
      const r = await runStrata([
        '--store',
        root,
        'realise',
        '-j',
        String(jobs),
        ...drvs[tag]!.map((d) => `/nix/store/${d}`),
      ]);
      expect(r.code, r.stderr).toBe(0);
      const t = (n: string, e: string): number =>
        Number(readFileSync(join(marks, `${tag}-${n}-${e}`), 'utf8'));
      // Time both builds were running together.
      return Math.min(t('a', 'end'), t('b', 'end')) - Math.max(t('a', 'start'), t('b', 'start'));
    };
    expect(await overlapOf('j2', 2)).toBeGreaterThan(0.5);
    expect(await overlapOf('j1', 1)).toBeLessThan(0);
  });
});

describe.skipIf(!isRoot || !haveNix())('realise: strata and real Nix together', () => {
  it('`strata realise` and real `nix-store -r` of the same derivation run the builder once', async () => {
    ensureBuilt();
    const root = tempDir();
    const side = join(tempDir(), 'runs');
    const store = await openChroot(root);
    const drv = await addShDrv(
      store,
      'shared',
      `echo run >> ${side}; /bin/sleep 1; echo done > $out`,
    );
    await store.close();
    const full = `/nix/store/${drv.baseName}`;
    // Real Nix in a private /nix (this store's nix dir), so it needs no sandbox (formats.md §1).
    const nix = new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(
        'unshare',
        [
          '-m',
          '--propagation',
          'private',
          'sh',
          '-c',
          'mount --bind "$1/nix" /nix && exec nix-store -r "$2"',
          'sh',
          root,
          full,
        ],
        { env: nixEnv() },
      );
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('close', (code) => resolve({ code, stderr }));
    });
    const strata = runStrata(['--store', root, 'realise', full]);
    const [n, s] = await Promise.all([nix, strata]);
    expect(n.code, n.stderr).toBe(0);
    expect(s.code, s.stderr).toBe(0);
    expect(readFileSync(side, 'utf8')).toBe('run\n');
    const again = await openChroot(root);
    try {
      const out = (await again.queryDerivationOutputs(drv)).get('out')!;
      expect(await again.isValidPath(out)).toBe(true);
      expect(s.stdout.toString()).toBe(`${again.storeDir.print(out)}\n`);
    } finally {
      await again.close();
    }
  });
});
