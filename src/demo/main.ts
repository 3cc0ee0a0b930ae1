#!/usr/bin/env node
/**
 * The built-in demo (`npm run demo`): the main job end to end, with no data brought in.
 *
 * 1. Builds a "big disk": a store of 50 real packages built by strata, with a package index,
 *    packed into a squashfs image and attached read-only through a loop device.
 * 2. Creates a user's layered store over it and an environment from an example spec: instant,
 *    paths copied up, no package bytes written.
 * 3. Builds a package the big disk lacks: it lands in the upper only, and survives a remount.
 * 4. Ships generation 2 of the big disk; the user's store picks it up, loses nothing, fsck clean.
 * 5. Prints a summary with timings. A second run reuses what the first made.
 *
 * `npm run demo -- clean` unmounts and removes everything (default dir /var/tmp/strata-demo,
 * or $STRATA_DEMO_DIR).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadEnvironment } from '../env/index.js';
import { fsck } from '../store/layered/fsck.js';
import type { LayeredStore } from '../store/layered/layered-store.js';
import { initLayered, openLayered } from '../store/layered/open-layered.js';
import { attachImage, bindOver, buildPackages, isMountPoint, makeBigDisk } from './big-disk.js';
import { GENERATION_1, GENERATION_2_EXTRA, LOCAL_ONLY } from './packages.js';

const WORK = process.env['STRATA_DEMO_DIR'] ?? '/var/tmp/strata-demo';
const SPEC_SOURCE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'demo', 'replit.nix');
const timings: Array<[string, number]> = [];

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function step<T>(title: string, fn: () => Promise<T>): Promise<T> {
  say(`\n== ${title}`);
  const t0 = performance.now();
  const r = await fn();
  const ms = performance.now() - t0;
  timings.push([title, ms]);
  say(`   (${ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(1)} s`})`);
  return r;
}

function duBytes(dir: string): number {
  const r = spawnSync('du', ['-sb', '--apparent-size', dir], { encoding: 'utf8' });
  return Number(r.stdout.split('\t')[0] ?? 0);
}

function clean(): void {
  if (!existsSync(WORK)) {
    say(`nothing to clean: ${WORK} does not exist`);
    return;
  }
  for (let i = 0; i < 5; i++) {
    const targets = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter((t) => t === WORK || t.startsWith(`${WORK}/`));
    if (targets.length === 0) break;
    for (const t of targets.sort((a, b) => b.length - a.length)) spawnSync('umount', ['--lazy', t]);
  }
  rmSync(WORK, { recursive: true, force: true });
  say(`removed ${WORK} and unmounted everything under it`);
}

async function main(): Promise<void> {
  if (process.argv[2] === 'clean') return clean();
  if (process.getuid?.() !== 0) throw new Error('the demo mounts disk images: run it as root');
  mkdirSync(WORK, { recursive: true });
  const bigdisk = join(WORK, 'bigdisk'); // the stable path users' stores name as their lower
  const userDir = join(WORK, 'user');
  const project = join(WORK, 'project');
  say(`strata demo in ${WORK}`);

  const gen1 = await step('Big disk, generation 1: build 50 packages with strata, pack a squashfs image', async () => {
    const disk = await makeBigDisk(WORK, 1, GENERATION_1);
    say(`   ${disk.reused ? 'reused' : 'built'} ${disk.image}: ${disk.packages} packages, ${disk.paths} store paths, generation ${disk.generation}`);
    const mnt = join(WORK, 'mnt', disk.generation);
    attachImage(disk.image, mnt);
    if (isMountPoint(bigdisk)) say(`   ${bigdisk} is attached already (generation ${readFileSync(join(bigdisk, 'nix/var/nix/strata-generation'), 'utf8').trim()})`);
    else {
      bindOver(mnt, bigdisk);
      say(`   attached read-only at ${bigdisk} (loop device, squashfs)`);
    }
    return disk;
  });

  const uri = `layered://${userDir}`;
  let store: LayeredStore = await step("The user's layered store over the big disk", async () => {
    if (existsSync(join(userDir, 'strata.json'))) {
      say(`   reusing ${uri}`);
      return openLayered(uri, userDir);
    }
    const s = await initLayered(userDir, [bigdisk]);
    say(`   created ${uri}: upper ${join(userDir, 'upper')}, merged store at ${join(userDir, 'nix/store')}`);
    return s;
  });
  await store.close();

  const specFile = join(project, 'replit.nix');
  await step('An environment from an example spec (replit.nix), straight from the big disk', async () => {
    mkdirSync(project, { recursive: true });
    if (!existsSync(specFile)) copyFileSync(SPEC_SOURCE, specFile);
    const upperBefore = duBytes(join(userDir, 'upper'));
    const env = await loadEnvironment(specFile, { storeUri: uri, onEvent: (e) => void (e.type === 'stale' && say(`   env cache stale: ${e.reason}`)) });
    const written = duBytes(join(userDir, 'upper')) - upperBefore;
    if (env.source === 'cache') say(`   ${env.packages.length} packages, answered from the fresh env cache without opening the store`);
    else say(`   ${env.packages.length} packages, ${env.stats?.closurePaths ?? 0} paths in the closure, ${env.stats?.copiedUp ?? 0} copied up from the big disk (rows only)`);
    say(`   bytes written to the upper layer: ${written} (package bytes: 0${written > 0 ? '; the rest is the profile\'s symlinks' : ''})`);
    say(`   PATH=${env.variables.find((v) => v.name === 'PATH')?.value ?? ''}`);
    say(indent(strata(['--store', uri, 'shell', specFile, '--', 'sh', '-c', 'hello; cowsay instant; cfact 20; greet-world'])));
  });

  await step('A package the big disk lacks, built by the user: it lands in the upper layer only', async () => {
    store = await openLayered(uri, userDir);
    try {
      const built = await buildPackages(store, [LOCAL_ONLY]);
      const out = built.get(LOCAL_ONLY.attr)!.out;
      const base = out.slice(out.lastIndexOf('/') + 1);
      say(`   ${out}`);
      say(`   in the upper layer: ${existsSync(join(userDir, 'upper', base))}; in the big disk: ${existsSync(join(bigdisk, 'nix/store', base))}`);
      (await import('../store/layered/mounts.js')).unmountOverlay(join(userDir, 'nix/store'));
      say(`   unmounted; ${out} visible now: ${existsSync(join(userDir, 'nix/store', base))}`);
    } finally {
      await store.close();
    }
    store = await openLayered(uri, userDir, { onMount: (m) => say(`   mount: ${m.action}`) });
    try {
      const out = [...(await buildPackages(store, [LOCAL_ONLY])).values()].at(-1)!.out;
      say(indent(strata(['--store', uri, 'shell', specFile, '--', out + '/bin/my-tool'])));
    } finally {
      await store.close();
    }
  });

  const gen2 = await step('Big disk, generation 2: more packages, deployed under the live user store', async () => {
    const disk = await makeBigDisk(WORK, 2, [...GENERATION_1, ...GENERATION_2_EXTRA]);
    say(`   ${disk.reused ? 'reused' : 'built'} ${disk.image}: ${disk.packages} packages, ${disk.paths} store paths`);
    const current = readFileSync(join(bigdisk, 'nix/var/nix/strata-generation'), 'utf8').trim();
    if (current !== disk.generation) {
      const mnt = join(WORK, 'mnt', disk.generation);
      attachImage(disk.image, mnt);
      bindOver(mnt, bigdisk);
      say(`   attached over ${bigdisk} (generation ${current} -> ${disk.generation})`);
    }
    store = await openLayered(uri, userDir, { onMount: (m) => say(`   user store: ${m.action}${m.reason ? ` (${m.reason})` : ''}; rescued ${m.rescued.length}, lost ${m.lost.length}`) });
    try {
      const report = await fsck(store);
      say(`   strata fsck: ${report.problems.length === 0 ? 'clean' : report.problems.map((p) => `${p.kind} ${p.path}`).join(', ')}`);
      const mine = [...(await buildPackages(store, [LOCAL_ONLY])).values()].at(-1)!.out;
      say(`   the user's own package is still there: ${existsSync(join(userDir, 'nix/store', mine.slice(mine.lastIndexOf('/') + 1)))}`);
    } finally {
      await store.close();
    }
    const env = await loadEnvironment(specFile, { storeUri: uri, onEvent: (e) => void (e.type === 'stale' && say(`   env cache stale: ${e.reason}`)) });
    say(`   environment ${env.source === 'cache' ? 'from cache' : 'rebuilt'}; generation 2's new tool: ${strata(['--store', uri, 'shell', specFile, '--', `${JSON.parse(readFileSync(join(bigdisk, 'nix/var/nix/strata-packages.json'), 'utf8')).weather}/bin/weather`]).trim()}`);
    return disk;
  });

  say('');
  say(`summary: big disk ${gen1.generation} -> ${gen2.generation}, user store ${uri}`);
  for (const [t, ms] of timings) say(`  ${(ms / 1000).toFixed(2).padStart(7)} s  ${t}`);
  say(`\nrun again to see everything reused; clean up with: npm run demo -- clean`);
}

function indent(text: string): string {
  return text.trimEnd().split('\n').map((l) => `   | ${l}`).join('\n');
}

/** Runs the strata CLI of this checkout and returns its stdout (its stderr passes through). */
function strata(args: string[]): string {
  const bin = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'strata');
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`strata ${args.join(' ')} exited ${r.status}`);
  return r.stdout;
}

await main().catch((e: unknown) => {
  process.stderr.write(`error: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
