/**
 * Lowers changing under live uppers (issue 8 §3), in random rounds: a lower chain is shared by
 * an upper that refers to random lower paths; then, behind strata's back, the lower grows,
 * loses paths (files and rows, as a new generation lacking them), has files corrupted, and
 * whiteouts appear over lower paths. strata notices: fsck names every dangling row and every
 * whiteout, verify names every corrupted copied-up path, `fsck --repair` with the old generation
 * as substituter restores what it can, and no upper data is lost. strata itself never writes
 * to the lower (hashed before and after each strata step).
 */
import { spawnSync } from 'node:child_process';
import { cpSync, readdirSync, truncateSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { StoreDir, type StorePath } from '../../src/core/store-path.js';
import { fsck } from '../../src/store/layered/fsck.js';
import { initLayered, openLayered } from '../../src/store/layered/open-layered.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { hashTree, makeLower } from '../support/layered.js';
import { isRoot } from '../support/mounts.js';
import { tempDir } from '../support/tmp.js';
import { count, record, rng, SEED, TIMEOUT } from './_torture.js';

const dir = new StoreDir();

function pick<T>(xs: T[], n: number, rand: () => number): T[] {
  const copy = [...xs];
  const out: T[] = [];
  while (out.length < n && copy.length)
    out.push(copy.splice(Math.floor(rand() * copy.length), 1)[0]!);
  return out;
}

describe.runIf(isRoot)('torture: lowers changing under live uppers', { timeout: TIMEOUT }, () => {
  it('fsck and verify name every affected path, repair restores from the old generation, upper data survives', async () => {
    const rounds = count(2, 12);
    let checks = 0;
    for (let round = 0; round < rounds; round++) {
      const rand = rng(SEED + round * 7);
      const work = tempDir();
      const lower = await makeLower(join(work, 'lower'), `r${round}`);
      const ls = (await openStore(lower.root)) as LocalStore;
      const chain: StorePath[] = [];
      try {
        for (let k = 0; k < 12; k++)
          chain.push((await ls.addText(`lp${round}-${k}`, `lower path ${k}\n`, [])).path);
      } finally {
        await ls.close();
      }
      const backup = join(work, 'backup');
      cpSync(lower.root, backup, { recursive: true });
      const root = join(work, 'layered');
      let store = await initLayered(root, [lower.root], {
        substituters: [`${backup}?read-only=true`],
      });
      const used = pick(chain, 6, rand);
      const mine: StorePath[] = [];
      try {
        for (const [k, p] of used.entries())
          mine.push((await store.addText(`mine${k}`, `uses ${dir.print(p)}\n`, [p])).path);
      } finally {
        await store.close();
      }
      const upperBefore = Object.fromEntries(
        mine.map((p) => [p.baseName, hashTree(join(root, 'upper', p.baseName))]),
      );

      // Behind strata's back.
      const rest = chain.filter((p) => !used.includes(p));
      const gone = [...pick(used, 1 + Math.floor(rand() * 2), rand), ...pick(rest, 1, rand)];
      const keep = used.filter((p) => !gone.includes(p));
      const corrupt = pick(keep, 1, rand);
      const whiteout = pick(
        chain.filter((p) => !gone.includes(p) && !corrupt.includes(p) && !used.includes(p)),
        1,
        rand,
      );
      const l = (await openStore(lower.root)) as LocalStore;
      let grown: StorePath;
      try {
        grown = (await l.addText(`grown${round}`, 'the lower grew\n', [])).path;
        for (const p of gone) {
          l.db.db
            .prepare(
              'DELETE FROM Refs WHERE reference = (SELECT id FROM ValidPaths WHERE path = ?)',
            )
            .run(dir.print(p));
          l.db.invalidate(p);
          spawnSync('rm', ['-rf', join(lower.root, 'nix', 'store', p.baseName)]);
        }
      } finally {
        await l.close();
      }
      for (const p of corrupt) truncateSync(join(lower.root, 'nix', 'store', p.baseName), 3);
      for (const p of whiteout)
        spawnSync('mknod', [join(root, 'upper', p.baseName), 'c', '0', '0']);
      const lowerNow = hashTree(lower.root);

      store = await openLayered(`layered://${root}`, root);
      try {
        // The lower grew: the new path is visible.
        expect(await store.isValidPath(grown), 'grown lower path').toBe(true);
        const report = await fsck(store);
        const named = new Set(report.problems.map((p) => `${p.kind} ${p.path}`));
        for (const p of gone.filter((g) => used.includes(g)))
          expect(
            named.has(`dangling ${dir.print(p)}`),
            `dangling ${p.baseName}: ${[...named].join(', ')}`,
          ).toBe(true);
        for (const [k, p] of used.entries())
          if (gone.includes(p))
            expect(
              named.has(`refers-to-dangling ${dir.print(mine[k]!)}`),
              `referrer of ${p.baseName}`,
            ).toBe(true);
        for (const p of whiteout)
          expect(named.has(`whiteout ${dir.print(p)}`), `whiteout ${p.baseName}`).toBe(true);
        const verify = await store.verify({ checkContents: true });
        for (const p of corrupt)
          expect(
            verify.modified.map((m) => m.baseName),
            `corrupt ${p.baseName}`,
          ).toContain(p.baseName);
        const repaired = await fsck(store, { repair: true });
        expect(repaired.unrepaired, 'fsck --repair').toEqual([]);
        expect(
          (await fsck(store)).problems.filter((p) => p.kind !== 'duplicate'),
          'after repair',
        ).toEqual([]);
        for (const p of gone.filter((g) => used.includes(g)))
          expect(await store.isValidPath(p)).toBe(true);
        for (const p of mine) expect(await store.isValidPath(p)).toBe(true);
      } finally {
        await store.close();
      }
      // No upper data lost; the lower not written by strata.
      for (const p of mine)
        expect(hashTree(join(root, 'upper', p.baseName)), p.baseName).toBe(upperBefore[p.baseName]);
      expect(
        readdirSync(join(root, 'upper')).filter((e) => whiteout.some((w) => w.baseName === e)),
      ).toEqual([]);
      expect(hashTree(lower.root)).toBe(lowerNow);
      checks += gone.length + corrupt.length + whiteout.length + 1;
    }
    record('changing lowers', { trials: rounds, inputs: checks });
  });
});
