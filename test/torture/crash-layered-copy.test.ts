/**
 * Crash consistency beyond the local store (issue 8 §1, §7): kill -9 during copy-up and adds in
 * a layered store (the lower hashed before and after: never touched), and during `strata copy`
 * to a file:// binary cache and from it (substitution) into a local store.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { Hash } from '../../src/core/hash.js';
import { parseNarInfo } from '../../src/core/narinfo.js';
import { StoreDir } from '../../src/core/store-path.js';
import { hashPath } from '../../src/fs/hash-path.js';
import { initLayered } from '../../src/store/layered/open-layered.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { hashTree, makeLower } from '../support/layered.js';
import { isRoot } from '../support/mounts.js';
import { haveNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import {
  checkStore,
  KillClock,
  makeSource,
  runAndKill,
  strataArgv,
  validSet,
  workerArgv,
} from './_crash.js';
import { SEED, TIMEOUT, count, record, rng } from './_torture.js';

const dir = new StoreDir();

async function textExpectation(work: string, name: string, text: string): Promise<Hash> {
  const f = join(work, `${name}.txt`);
  writeFileSync(f, text);
  return (await hashPath(f)).hash;
}

describe.runIf(haveNix())('torture: kill -9 beyond the local store', { timeout: TIMEOUT }, () => {
  it.runIf(isRoot)(
    'layered store: killed adds that copy up lower closures leave upper and merged view consistent, the lower untouched',
    async () => {
      ensureBuilt();
      const work = tempDir();
      const lower = await makeLower(join(work, 'lower'));
      // A longer lower chain, so copy-up has a closure to walk.
      const ls = (await openStore(lower.root)) as LocalStore;
      const chain: string[] = [];
      try {
        let prev = lower.paths.top;
        for (let k = 0; k < 40; k++) {
          prev = (await ls.addText(`lchain${k}`, `lower ${k} ${dir.print(prev)}\n`, [prev])).path;
          chain.push(dir.print(prev));
        }
      } finally {
        await ls.close();
      }
      const lowerPaths = validSet(lower.root);
      const before = hashTree(lower.root);
      const root = join(work, 'layered');
      await (await initLayered(root, [lower.root])).close();
      const uri = `layered://${root}`;
      let trials = 0;
      const clock = new KillClock(1000);
      const n = count(3, 35);
      for (let i = 0; i < n; i++) {
        const rand = rng(SEED + i * 104729);
        const items: Array<{ name: string; text: string; references: string[] }> = [];
        const complete = new Map<string, Hash>();
        let prev: string | undefined;
        for (let k = 0; k < 30; k++) {
          const lowerRef = chain[Math.floor(rand() * chain.length)]!;
          const refs = [lowerRef, ...(prev ? [prev] : [])].sort();
          const text = `trial ${i} item ${k} uses ${refs.join(' ')}\n`;
          const name = `up${i}-${k}`;
          const path = dir.makeTextPath(
            name,
            Hash.of('sha256', text),
            refs.map((r) => dir.parse(r)),
          );
          complete.set(path.baseName, await textExpectation(work, name, text));
          items.push({ name, text, references: refs });
          prev = dir.print(path);
        }
        const job = join(work, `job${i}.json`);
        writeFileSync(
          job,
          JSON.stringify({ items, paths: chain.slice(0, 1 + Math.floor(rand() * chain.length)) }),
        );
        const op = i % 3 === 2 ? 'copy-up' : 'text';
        const run = await runAndKill(workerArgv(op, uri, job), clock.pick(rand));
        clock.observe(run);
        const problems = await checkStore(root, { complete, lowerPaths }, { storeUri: uri });
        const again = await runAndKill(workerArgv(op, uri, job), 120_000);
        if (again.code !== 0) problems.push(`re-run: ${again.code} ${again.stderr}`);
        if (op === 'text')
          for (const b of complete.keys())
            if (!validSet(root).has(b)) problems.push(`re-run did not make ${b} valid`);
        // Upper rows of lower paths are metadata only: no lower byte is copied into the upper layer.
        for (const e of readdirSync(join(root, 'upper')))
          if (lowerPaths.has(e)) problems.push(`lower path ${e} copied into the upper layer`);
        if (hashTree(lower.root) !== before) problems.push('the lower changed');
        trials++;
        if (problems.length) {
          record('crash: layered copy-up/add', { trials, failures: 1 });
          expect.fail(
            `layered trial ${i} (STRATA_TORTURE_SEED=${SEED}, killed=${run.killed}): ${problems.join('; ')}`,
          );
        }
      }
      record('crash: layered copy-up/add', { trials, failures: 0 });
      expect(hashTree(lower.root)).toBe(before);
    },
  );

  it('strata copy to a file:// cache and from it: a killed copy never leaves a narinfo without its NAR, nor a bad path in the store', async () => {
    ensureBuilt();
    const work = tempDir();
    const src = join(work, 'src');
    const store = (await openStore(src)) as LocalStore;
    const paths: string[] = [];
    const complete = new Map<string, Hash>();
    try {
      const rand = rng(SEED);
      for (let k = 0; k < 8; k++) {
        const s = await makeSource(
          join(work, `s${k}`),
          `c${k}`,
          rand,
          k % 3 === 0 ? 2 * 1024 * 1024 : 0,
        );
        const info = await store.addPath(s.dir);
        paths.push(dir.print(info.path));
        complete.set(info.path.baseName, info.narHash);
      }
    } finally {
      await store.close();
    }
    let trials = 0;
    const pushClock = new KillClock(1000);
    const pullClock = new KillClock(1000);
    const n = count(2, 25);
    for (let i = 0; i < n; i++) {
      const rand = rng(SEED + i * 15485863);
      const cache = join(work, `cache${i}`);
      const dest = join(work, `dest${i}`);
      const compression = ['xz', 'zstd', 'none', 'br'][i % 4]!;
      const problems: string[] = [];
      const push = await runAndKill(
        strataArgv(
          'copy',
          '--from',
          src,
          '--to',
          `file://${cache}?compression=${compression}`,
          ...paths,
        ),
        pushClock.pick(rand),
      );
      pushClock.observe(push);
      // Every narinfo in the cache points at a complete NAR file.
      if (existsSync(cache)) {
        for (const f of readdirSync(cache).filter((x) => x.endsWith('.narinfo'))) {
          const ni = parseNarInfo(readFileSync(join(cache, f)));
          const nar = join(cache, ni.url);
          if (!existsSync(nar)) problems.push(`${f} without its NAR`);
          else if (ni.fileHash && !Hash.of('sha256', readFileSync(nar)).equals(ni.fileHash))
            problems.push(`${f}: NAR file is partial`);
        }
      }
      const pushAgain = await runStrata([
        'copy',
        '--from',
        src,
        '--to',
        `file://${cache}?compression=${compression}`,
        ...paths,
      ]);
      if (pushAgain.code !== 0) problems.push(`re-run push: ${pushAgain.stderr}`);
      const pull = await runAndKill(
        strataArgv(
          '--no-require-sigs',
          'copy',
          '--from',
          `file://${cache}`,
          '--to',
          dest,
          ...paths,
        ),
        pullClock.pick(rand),
      );
      pullClock.observe(pull);
      if (existsSync(join(dest, 'nix', 'var', 'nix', 'db', 'db.sqlite')))
        problems.push(...(await checkStore(dest, { complete })));
      const pullAgain = await runStrata([
        '--no-require-sigs',
        'copy',
        '--from',
        `file://${cache}`,
        '--to',
        dest,
        ...paths,
      ]);
      if (pullAgain.code !== 0) problems.push(`re-run pull: ${pullAgain.stderr}`);
      else {
        const valid = validSet(dest);
        for (const p of paths)
          if (!valid.has(p.slice(11))) problems.push(`re-run pull did not make ${p} valid`);
        problems.push(...(await checkStore(dest, { complete }, { nix: false })));
      }
      trials++;
      if (problems.length) {
        record('crash: copy/substitute', { trials, failures: 1 });
        expect.fail(
          `copy trial ${i} (STRATA_TORTURE_SEED=${SEED}, killed=${push.killed}/${pull.killed}): ${problems.join('; ')}`,
        );
      }
    }
    record('crash: copy/substitute', { trials, failures: 0 });
  });
});
