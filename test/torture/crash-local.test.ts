/**
 * Crash consistency of a local store (issue 8 §1): a real strata process doing add, NAR import,
 * gc, optimise or realise is killed with SIGKILL after a random delay. After every kill: strata
 * verify --check-contents and real Nix 2.8's `nix-store --verify --check-contents` pass, every
 * row's files re-hash to the row, nothing half-written sits under a store path name, and the
 * interrupted command, run again, succeeds. Stale `tmp-*` dirs and `.lock` files may remain;
 * they are never valid and the next GC removes them.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it, onTestFinished } from 'vitest';

import { nix32Encode } from '../../src/core/hash.js';
import { StoreDir, StorePath } from '../../src/core/store-path.js';
import { dumpPath } from '../../src/fs/nar-dump.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { addShDrv } from '../build/helpers.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { haveNix, nixEnv } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import {
  checkStore,
  KillClock,
  leftovers,
  makeSource,
  runAndKill,
  strataArgv,
  validSet,
  workerArgv,
} from './_crash.js';
import { SEED, TIMEOUT, count, record, rng } from './_torture.js';

const dir = new StoreDir();

/** Real Nix's `nix-store ARGS` standard output, as bytes (an export stream). */
function runNixRaw(args: string[]): Buffer {
  const r = spawnSync('nix-store', args, { env: nixEnv(), maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`nix-store ${args.join(' ')}: ${r.stderr.toString()}`);
  return r.stdout;
}
const isRoot = process.getuid?.() === 0;

async function openLocal(root: string): Promise<LocalStore> {
  return (await openStore(root)) as LocalStore;
}

/** Runs `trials` crash trials, failing with the seed and trial number on the first problem. */
async function crashTrials(
  name: string,
  trials: number,
  trial: (i: number, rand: () => number) => Promise<{ problems: string[]; killed: boolean }>,
): Promise<void> {
  let killed = 0;
  for (let i = 0; i < trials; i++) {
    // A run that finished before its kill proves little: try again (the kill clock has learnt
    // the run's length by then), up to 4 attempts, checking the store after every one.
    for (let attempt = 0; attempt < 4; attempt++) {
      // Each attempt is a trial of its own (fresh names), so its leftovers do not collide.
      const r = await trial(i + attempt * 10_000, rng(SEED + i * 7919 + attempt * 104_729));
      if (r.problems.length > 0) {
        record(`crash: ${name}`, { trials: i + 1, failures: 1 });
        expect.fail(
          `${name}: trial ${i} attempt ${attempt} (STRATA_TORTURE_SEED=${SEED}) left: ${r.problems.join('; ')}`,
        );
      }
      if (r.killed) {
        killed++;
        break;
      }
    }
  }
  record(`crash: ${name}`, { trials, failures: 0 });
  // Most kills must land while the process is working, or the trials prove little.
  expect(killed).toBeGreaterThan(trials / 3);
}

describe.runIf(haveNix())(
  'torture: kill -9 during local-store writes',
  { timeout: TIMEOUT },
  () => {
    it('add (strata add): a killed add leaves a consistent store and re-running it succeeds', async () => {
      ensureBuilt();
      const root = tempDir();
      const work = tempDir();
      await (await openLocal(root)).close();
      const clock = new KillClock(1000);
      await crashTrials('add', count(3, 35), async (i, rand) => {
        const src = await makeSource(
          join(work, `src${i}`),
          `add${i}`,
          rand,
          Math.floor(rand() * 8) * 1024 * 1024,
        );
        const path = dir.makeFixedOutputPath(`src${i}`, src.narHash, true);
        const run = await runAndKill(strataArgv('--store', root, 'add', src.dir), clock.pick(rand));
        clock.observe(run);
        const problems = await checkStore(root, {
          complete: new Map([[path.baseName, src.narHash]]),
        });
        const again = await runStrata(['--store', root, 'add', src.dir]);
        if (again.code !== 0 || again.stdout.toString() !== `${dir.print(path)}\n`)
          problems.push(`re-run: ${again.code} ${again.stderr}`);
        if (!validSet(root).has(path.baseName)) problems.push('re-run did not make the path valid');
        return { problems, killed: run.killed };
      });
    });

    for (const [op, title] of [
      ['import', 'NAR import (addFromNar): a killed import of a chain'],
      ['import-batch', 'batched NAR import (addFromNars): a killed batch import of a chain'],
    ] as const)
      it(`${title} leaves a consistent store and re-running it succeeds`, async () => {
        ensureBuilt();
        const root = tempDir();
        const work = tempDir();
        await (await openLocal(root)).close();
        const clock = new KillClock(1000);
        await crashTrials(
          op === 'import' ? 'NAR import' : 'batched NAR import',
          count(3, 35),
          async (i, rand) => {
            const items: Array<{
              path: string;
              narHash: string;
              narSize: number;
              references: string[];
              source: string;
            }> = [];
            const complete = new Map();
            for (let k = 0; k < 6; k++) {
              const src = await makeSource(
                join(work, `t${i}-${k}`),
                `imp${i}-${k}`,
                rand,
                k === 3 ? 3 * 1024 * 1024 : 0,
              );
              const base = `${nix32Encode(randomBytes(20))}-imp${i}-${k}`;
              items.push({
                path: `/nix/store/${base}`,
                narHash: src.narHash.toString(),
                narSize: src.narSize,
                references: k ? [items[k - 1]!.path] : [],
                source: src.dir,
              });
              complete.set(base, src.narHash);
            }
            const job = join(work, `job${i}.json`);
            writeFileSync(job, JSON.stringify({ items }));
            const run = await runAndKill(workerArgv(op, root, job), clock.pick(rand));
            clock.observe(run);
            const problems = await checkStore(root, { complete });
            // A valid path's references are valid: the chain is registered in order.
            const valid = validSet(root);
            for (const [k, it] of items.entries())
              if (k && valid.has(it.path.slice(11)) && !valid.has(items[k - 1]!.path.slice(11)))
                problems.push(`${it.path} valid without its reference`);
            // A batch is one registration: all of it valid, or none.
            const batchValid = items.filter((it) => valid.has(it.path.slice(11))).length;
            if (op === 'import-batch' && batchValid !== 0 && batchValid !== items.length)
              problems.push(`${batchValid} of the ${items.length} paths of one batch valid`);
            const again = await runAndKill(workerArgv(op, root, job), 120_000);
            if (again.code !== 0) problems.push(`re-run: ${again.code} ${again.stderr}`);
            for (const it of items)
              if (!validSet(root).has(it.path.slice(11)))
                problems.push(`re-run did not make ${it.path} valid`);
            return { problems, killed: run.killed };
          },
        );
      });

    it('strata import (an export stream, restored as it is read): a killed import leaves a consistent store and re-running it succeeds', async () => {
      ensureBuilt();
      const root = tempDir();
      const work = tempDir();
      await (await openLocal(root)).close();
      const clock = new KillClock(1000);
      await crashTrials('strata import', count(3, 35), async (i, rand) => {
        // A chain of 6 paths (one of 3 MiB) in a source store, exported by real Nix.
        const src = join(work, `src${i}`);
        const store = await openLocal(src);
        const complete = new Map();
        const paths: string[] = [];
        try {
          for (let k = 0; k < 6; k++) {
            const s = await makeSource(
              join(work, `t${i}-${k}`),
              `exp${i}-${k}`,
              rand,
              k === 3 ? 3 * 1024 * 1024 : 0,
            );
            const chunks: Buffer[] = [];
            for await (const c of dumpPath(s.dir)) chunks.push(c as Buffer);
            const nar = Buffer.concat(chunks);
            const path = StorePath.fromBaseName(`${nix32Encode(randomBytes(20))}-exp${i}-${k}`);
            const prev = paths.at(-1);
            await store.addFromNars([
              {
                info: {
                  path,
                  narHash: s.narHash,
                  narSize: nar.length,
                  references: prev ? [StorePath.fromBaseName(prev)] : [],
                  ultimate: false,
                  sigs: [],
                },
                nar: () => nar,
              },
            ]);
            paths.push(path.baseName);
            complete.set(path.baseName, s.narHash);
          }
        } finally {
          await store.close();
        }
        const exportFile = join(work, `export${i}`);
        const ex = runNixRaw(['--store', src, '--export', ...paths.map((p) => `/nix/store/${p}`)]);
        writeFileSync(exportFile, ex);
        const run = await runAndKill(
          strataArgv('--store', root, 'import'),
          clock.pick(rand),
          exportFile,
        );
        clock.observe(run);
        const problems = await checkStore(root, { complete });
        // One batch, one registration: all of the stream valid, or none of it.
        const valid = validSet(root);
        const n = paths.filter((p) => valid.has(p)).length;
        if (n !== 0 && n !== paths.length)
          problems.push(`${n} of the ${paths.length} paths of one import valid`);
        const again = await runAndKill(strataArgv('--store', root, 'import'), 120_000, exportFile);
        if (again.code !== 0) problems.push(`re-run: ${again.code} ${again.stderr}`);
        for (const p of paths)
          if (!validSet(root).has(p)) problems.push(`re-run did not make ${p} valid`);
        return { problems, killed: run.killed };
      });
    });

    it('gc (strata gc): a killed collection never loses a rooted path, and the next one removes every leftover', async () => {
      ensureBuilt();
      const root = tempDir();
      const work = tempDir();
      const clock = new KillClock(1000);
      await crashTrials('gc', count(2, 25), async (i, rand) => {
        const store = await openLocal(root);
        const rooted: string[] = [];
        try {
          let prev = (await store.addText(`keep${i}-leaf`, `leaf ${i}\n`, [])).path;
          rooted.push(prev.baseName);
          const top = (await store.addText(`keep${i}-top`, `top ${dir.print(prev)}\n`, [prev]))
            .path;
          rooted.push(top.baseName);
          symlinkSync(dir.print(top), join(store.stateDir, 'gcroots', `r${i}`));
          for (let k = 0; k < 120; k++)
            prev = (
              await store.addText(
                `junk${i}-${k}`,
                `junk ${k} ${dir.print(prev)}\n`,
                k % 10 ? [prev] : [],
              )
            ).path;
          for (let k = 0; k < 6; k++)
            await store.addPath((await makeSource(join(work, `g${i}-${k}`), `g${k}`, rand, 0)).dir);
        } finally {
          await store.close();
        }
        const run = await runAndKill(strataArgv('--store', root, 'gc'), clock.pick(rand));
        clock.observe(run);
        const problems = await checkStore(root, {
          complete: new Map(),
          mustStayValid: rooted,
          allowHalfDeleted: true,
        });
        const again = await runStrata(['--store', root, 'gc']);
        if (again.code !== 0) problems.push(`re-run: ${again.code} ${again.stderr}`);
        const valid = validSet(root);
        for (const r of rooted) if (!valid.has(r)) problems.push(`rooted ${r} collected`);
        const left = leftovers(join(root, 'nix', 'store'), valid);
        if (left.length > 0) problems.push(`GC left ${left.join(', ')}`);
        problems.push(
          ...(await checkStore(
            root,
            { complete: new Map(), mustStayValid: rooted },
            { nix: false },
          )),
        );
        return { problems, killed: run.killed };
      });
    });

    it('optimise (strata optimise): a killed optimise never changes a file and re-running it succeeds', async () => {
      ensureBuilt();
      const root = tempDir();
      const work = tempDir();
      const clock = new KillClock(600);
      await crashTrials('optimise', count(2, 25), async (i, rand) => {
        const store = await openLocal(root);
        try {
          // Many paths sharing file contents, so optimise has links to make.
          for (let k = 0; k < 12; k++) {
            const d = join(work, `o${i}-${k}`);
            mkdirSync(d);
            for (let f = 0; f < 12; f++)
              writeFileSync(join(d, `f${f}`), `shared ${i} ${f}\n`.repeat(200));
            writeFileSync(join(d, 'own'), `own ${k} ${rand()}`);
            await store.addPath(d);
          }
        } finally {
          await store.close();
        }
        const run = await runAndKill(strataArgv('--store', root, 'optimise'), clock.pick(rand));
        clock.observe(run);
        const problems = await checkStore(root, { complete: new Map() });
        const again = await runStrata(['--store', root, 'optimise']);
        if (again.code !== 0) problems.push(`re-run: ${again.code} ${again.stderr}`);
        problems.push(...(await checkStore(root, { complete: new Map() }, { nix: false })));
        return { problems, killed: run.killed };
      });
    });

    it.runIf(isRoot)(
      'realise (strata realise): a killed build leaves no output behind half-built, and re-running it builds',
      async () => {
        ensureBuilt();
        // Killed runs leave their build dirs behind (so does Nix): in a temp dir of this test's.
        const oldTmp = process.env['TMPDIR'];
        process.env['TMPDIR'] = tempDir();
        onTestFinished(() => {
          if (oldTmp === undefined) delete process.env['TMPDIR'];
          else process.env['TMPDIR'] = oldTmp;
        });
        const root = tempDir();
        const store = await openLocal(root);
        const drvs: string[] = [];
        try {
          let prev: string | undefined;
          for (let k = 0; k < 4; k++) {
            const script = `/bin/mkdir $out; i=0; while [ $i -lt 40 ]; do echo ${k} $i > $out/f$i; i=$((i+1)); done; /bin/sleep 0.0${k}; /bin/dd if=/dev/zero of=$out/big bs=1M count=${1 + k} 2>/dev/null${prev ? `; echo ${prev} > $out/dep` : ''}`;
            const extra = prev ? { inputDrvs: new Map([[prev, ['out']]]) } : {};
            const drv = await addShDrv(store, `crash${k}`, script, extra);
            drvs.push(dir.print(drv));
            prev = drv.baseName;
          }
        } finally {
          await store.close();
        }
        // One clean build tells us what every output must hash to; then they are deleted again.
        const ref = await runStrata(['--store', root, 'realise', ...drvs]);
        expect(ref.code, ref.stderr).toBe(0);
        const outputs = ref.stdout.toString().trim().split('\n');
        const { hashPath } = await import('../../src/fs/hash-path.js');
        const complete = new Map();
        for (const o of outputs) complete.set(o.slice(11), (await hashPath(join(root, o))).hash);
        const clear = async (): Promise<void> => {
          const s = await openLocal(root);
          try {
            const valid = validSet(root);
            await s.deletePaths(
              outputs
                .filter((o) => valid.has(o.slice(11)))
                .map((o) => dir.parse(o))
                .reverse(),
            );
          } finally {
            await s.close();
          }
        };
        await clear();
        const clock = new KillClock(1500);
        await crashTrials('realise', count(2, 25), async (_i, rand) => {
          const run = await runAndKill(
            strataArgv('--store', root, 'realise', ...drvs),
            clock.pick(rand),
          );
          clock.observe(run);
          // An orphaned builder of the killed process may still be finishing in its scratch space.
          await new Promise((r) => setTimeout(r, 300));
          const problems = await checkStore(root, { complete });
          const again = await runStrata(['--store', root, 'realise', ...drvs]);
          if (again.code !== 0 || again.stdout.toString().trim() !== outputs.join('\n'))
            problems.push(`re-run: ${again.code} ${again.stderr}`);
          problems.push(...(await checkStore(root, { complete }, { nix: false })));
          await clear();
          return { problems, killed: run.killed };
        });
        const gc = await runStrata(['--store', root, 'gc']);
        expect(gc.code, gc.stderr).toBe(0);
        expect(
          readdirSync(join(root, 'nix', 'store')).filter(
            (n) => n.startsWith('tmp-') || n.endsWith('.lock'),
          ),
        ).toEqual([]);
      },
    );
  },
);
