/**
 * Many clients at once (issue 8 §2): 8 processes realising overlapping closures and
 * substituting overlapping closures from a file:// cache into one store (local, then layered),
 * with `strata gc` running beside them. Every process succeeds, every builder runs once (counted
 * in files outside the store), nothing a running process uses is collected, and no
 * "database is locked" reaches a user.
 */
import { readFileSync, readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { StoreDir, type StorePath } from '../../src/core/store-path.js';
import { readDerivation } from '../../src/store/derivation-add.js';
import { initLayered } from '../../src/store/layered/open-layered.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { isLocalFsStore, type LocalFsStore } from '../../src/store/store.js';
import { addShDrv } from '../build/helpers.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { hashTree, makeLower } from '../support/layered.js';
import { isRoot } from '../support/mounts.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { makeSource, validSet } from './_crash.js';
import { SEED, TIMEOUT, count, record, rng } from './_torture.js';

const dir = new StoreDir();

interface Fixture {
  drvs: Map<string, StorePath>;
  outputs: Map<string, string>;
  cachePaths: string[];
  cache: string;
}

/** A diamond-ish graph of derivations whose builders count their runs in `side`, plus a cache of sources. */
async function prepare(
  store: LocalFsStore,
  side: string,
  work: string,
  round: number,
): Promise<Fixture> {
  const drvs = new Map<string, StorePath>();
  const graph: Array<[string, string[]]> = [
    ['base', []],
    ['a', ['base']],
    ['b', ['base']],
    ['c', ['a', 'b']],
    ['d', ['a']],
    ['e', ['c', 'd']],
    ['f', ['b']],
  ];
  for (const [name, deps] of graph) {
    const inputDrvs = new Map(deps.map((d) => [drvs.get(d)!.baseName, ['out']]));
    const script = `echo ${name} >> ${side}/${name}; /bin/sleep 0.3; /bin/mkdir $out; echo ${name}-${round} > $out/value`;
    drvs.set(name, await addShDrv(store, `conc${round}-${name}`, script, { inputDrvs }));
  }
  // Output paths, read back from the drvs.
  const outputs = new Map<string, string>();
  for (const [name, drv] of drvs) {
    const out = (await readDerivation(store, drv)).outputs.get('out')?.path;
    if (out) outputs.set(name, dir.print(out));
  }
  // A file:// cache of overlapping closures to substitute from.
  const src = join(work, `csrc${round}`);
  const cs = (await openStore(src)) as LocalStore;
  const cachePaths: string[] = [];
  try {
    const rand = rng(SEED + round);
    let prev: StorePath | undefined;
    for (let k = 0; k < 10; k++) {
      const s = await makeSource(join(work, `cs${round}-${k}`), `cs${k}`, rand, 0);
      const p = (await cs.addPath(s.dir)).path;
      const t = (
        await cs.addText(
          `ct${round}-${k}`,
          `uses ${dir.print(p)} ${prev ? dir.print(prev) : ''}\n`,
          prev ? [p, prev] : [p],
        )
      ).path;
      cachePaths.push(dir.print(t));
      prev = t;
    }
  } finally {
    await cs.close();
  }
  const cache = join(work, `cache${round}`);
  const push = await runStrata([
    'copy',
    '-r',
    '--from',
    src,
    '--to',
    `file://${cache}?compression=zstd`,
    ...cachePaths,
  ]);
  expect(push.code, push.stderr).toBe(0);
  return { drvs, outputs, cachePaths, cache };
}

async function storm(
  uri: string,
  root: string,
  stateDir: string,
  work: string,
  round: number,
): Promise<number> {
  const side = tempDir();
  const store = await openStore(uri);
  if (!isLocalFsStore(store)) throw new Error('not a local fs store');
  let fx: Fixture;
  try {
    fx = await prepare(store, side, work, round);
  } finally {
    await store.close();
  }
  // Root the drvs and their outputs-to-be, so a GC beside us may only take what nobody needs.
  for (const [name, drv] of fx.drvs) {
    symlinkSync(dir.print(drv), join(stateDir, 'gcroots', `drv-${round}-${name}`));
    const out = fx.outputs.get(name);
    if (out) symlinkSync(out, join(stateDir, 'gcroots', `out-${round}-${name}`));
  }
  const rand = rng(SEED + round * 31);
  const tops = ['c', 'd', 'e', 'f', 'a', 'b'];
  const clients: Array<Promise<{ what: string; code: number; stderr: string; stdout: string }>> =
    [];
  for (let i = 0; i < 8; i++) {
    if (i % 4 === 3) {
      // Substituters: overlapping tails of the cache's chain (closures overlap).
      const from = Math.floor(rand() * fx.cachePaths.length);
      const args = [
        '--no-require-sigs',
        '--store',
        uri,
        'copy',
        '-r',
        '--from',
        `file://${fx.cache}`,
        '--to',
        uri,
        ...fx.cachePaths.slice(from, from + 3),
      ];
      clients.push(
        runStrata(args).then((r) => ({
          what: `copy ${i}`,
          code: r.code,
          stderr: r.stderr,
          stdout: r.stdout.toString(),
        })),
      );
    } else {
      const picks = tops.filter(() => rand() < 0.5);
      if (picks.length === 0) picks.push('e');
      const args = [
        '--store',
        uri,
        'realise',
        '-j',
        '2',
        ...picks.map((p) => dir.print(fx.drvs.get(p)!)),
      ];
      clients.push(
        runStrata(args).then((r) => ({
          what: `realise ${picks.join(',')}`,
          code: r.code,
          stderr: r.stderr,
          stdout: r.stdout.toString(),
        })),
      );
    }
  }
  // Collections beside them, a few times while they run.
  const gcs: Array<Promise<{ code: number; stderr: string }>> = [];
  for (let g = 0; g < 3; g++) {
    await new Promise((r) => setTimeout(r, 300 + rand() * 700));
    gcs.push(runStrata(['--store', uri, 'gc']));
  }
  const results = await Promise.all(clients);
  for (const r of results) {
    expect(r.code, `${r.what}: ${r.stderr}`).toBe(0);
    expect(r.stderr).not.toMatch(/database is locked|SQLITE_BUSY/i);
  }
  for (const g of await Promise.all(gcs)) {
    expect(g.code, g.stderr).toBe(0);
    expect(g.stderr).not.toMatch(/database is locked|SQLITE_BUSY/i);
  }
  // Each builder that had to run ran once.
  for (const f of readdirSync(side))
    expect(readFileSync(join(side, f), 'utf8').trim().split('\n'), `builder ${f}`).toHaveLength(1);
  // Every realised output is valid and intact; every substituted closure is valid.
  const valid = validSet(root);
  for (const r of results)
    for (const line of r.stdout.split('\n').filter((l) => l.startsWith('/nix/store/')))
      expect(valid.has(line.slice(11)), line).toBe(true);
  const v = await runStrata(['--store', uri, 'verify', '--check-contents']);
  expect(v.code, v.stderr).toBe(0);
  const n = runNix('nix-store', ['--store', root, '--verify', '--check-contents']);
  expect(n.code, n.stderr).toBe(0);
  return results.length + gcs.length;
}

describe.runIf(isRoot && haveNix())('torture: many clients at once', { timeout: TIMEOUT }, () => {
  it('8 processes realising and substituting overlapping closures into one local store, GC beside them', async () => {
    ensureBuilt();
    const root = tempDir();
    const work = tempDir();
    await (await openStore(root)).close();
    let processes = 0;
    const rounds = count(1, 4);
    for (let round = 0; round < rounds; round++)
      processes += await storm(root, root, join(root, 'nix', 'var', 'nix'), work, round);
    record('concurrency: local store', { trials: rounds, inputs: processes });
  });

  it('the same against a layered store, the lower untouched', async () => {
    ensureBuilt();
    const work = tempDir();
    const lower = await makeLower(join(work, 'lower'));
    const before = hashTree(lower.root);
    const root = join(work, 'layered');
    await (await initLayered(root, [lower.root])).close();
    let processes = 0;
    const rounds = count(1, 3);
    for (let round = 0; round < rounds; round++)
      processes += await storm(
        `layered://${root}`,
        root,
        join(root, 'nix', 'var', 'nix'),
        work,
        round,
      );
    expect(hashTree(lower.root)).toBe(before);
    record('concurrency: layered store', { trials: rounds, inputs: processes });
  });
});
