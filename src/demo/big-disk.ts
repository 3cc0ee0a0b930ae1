/**
 * Making a "big disk" the way a hosting platform would: a local store built by strata from the
 * demo's derivations, with its package index and generation marker, packed into a read-only
 * squashfs image and attached read-only through a loop device.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import Database from 'better-sqlite3';

import { realiseOrThrow } from '../build/index.js';
import { StrataError } from '../core/error.js';
import type { Derivation } from '../core/derivation/index.js';
import type { StorePath } from '../core/store-path.js';
import { indexFileOfRoot } from '../env/store-layout.js';
import { addDerivation } from '../store/derivation-add.js';
import type { LocalFsStore } from '../store/store.js';
import { openStore } from '../store/open.js';
import type { DemoPackage } from './packages.js';

/** Adds each package's derivation (dependencies first) and realises them all; attr → output. */
export async function buildPackages(store: LocalFsStore, packages: DemoPackage[], available: Map<string, { drv: StorePath; out: string }> = new Map(), jobs = 2): Promise<Map<string, { drv: StorePath; out: string }>> {
  const dir = store.storeDir;
  const done = new Map(available);
  const pending = [...packages];
  while (pending.length > 0) {
    const i = pending.findIndex((p) => p.deps.every((d) => done.has(d)));
    if (i < 0) throw new StrataError('DEMO_INVALID', `Cannot order the demo packages: '${pending[0]!.attr}' needs a package that is not defined`, { value: pending[0]!.attr });
    const pkg = pending.splice(i, 1)[0]!;
    const deps = Object.fromEntries(pkg.deps.map((d) => [d, done.get(d)!.out]));
    const drv: Derivation = {
      name: pkg.name,
      outputs: new Map([['out', {}]]),
      inputDrvs: new Map(pkg.deps.map((d) => [done.get(d)!.drv.baseName, ['out']])),
      inputSrcs: [],
      system: 'x86_64-linux',
      builder: '/bin/sh',
      args: ['-c', pkg.script(deps)],
      env: new Map([
        ['builder', '/bin/sh'],
        ['name', pkg.name],
        ['out', ''],
        ['system', 'x86_64-linux'],
      ]),
    };
    const drvPath = await addDerivation(store, drv);
    const out = (await store.queryDerivationOutputs(drvPath)).get('out')!;
    done.set(pkg.attr, { drv: drvPath, out: dir.print(out) });
  }
  const wanted = packages.map((p) => done.get(p.attr)!.drv);
  await realiseOrThrow(store, wanted, { jobs });
  return done;
}

export interface BigDisk {
  /** The squashfs image. */
  image: string;
  generation: string;
  packages: number;
  paths: number;
}

/**
 * Builds generation `n` of the big disk from `packages` into `workDir/gen<n>` and packs it.
 * Reuses an image made earlier from the same package set.
 */
export async function makeBigDisk(workDir: string, n: number, packages: DemoPackage[]): Promise<BigDisk & { reused: boolean }> {
  const fingerprint = createHash('sha256').update(packages.map((p) => `${p.attr}\0${p.name}\0${p.script(Object.fromEntries(p.deps.map((d) => [d, d])))}`).join('\n')).digest('hex').slice(0, 12);
  const generation = `gen-${n}-${fingerprint}`;
  const image = join(workDir, `bigdisk-${generation}.squashfs`);
  const meta = `${image}.json`;
  if (existsSync(image) && existsSync(meta)) return { ...(JSON.parse(readFileSync(meta, 'utf8')) as BigDisk), reused: true };

  const root = join(workDir, `build-${generation}`);
  rmSync(root, { recursive: true, force: true });
  const store = (await openStore(root)) as LocalFsStore & { db: { countValid(): number } };
  let outputs: Map<string, { drv: StorePath; out: string }>;
  let paths: number;
  try {
    outputs = await buildPackages(store, packages);
    paths = store.db.countValid();
  } finally {
    await store.close();
  }
  mkdirSync(join(root, 'nix/var/nix'), { recursive: true });
  writeFileSync(indexFileOfRoot(root), `${JSON.stringify(Object.fromEntries([...outputs].map(([a, o]) => [a, o.out])), null, 1)}\n`);
  writeFileSync(join(root, 'nix/var/nix/strata-generation'), generation);
  // A read-only medium wants a rollback-journal DB: SQLite then reads it in place (no -shm/-wal).
  const db = new Database(join(root, 'nix/var/nix/db/db.sqlite'));
  db.pragma('journal_mode = delete');
  db.close();
  rmSync(join(root, 'nix/var/nix/temproots'), { recursive: true, force: true });
  const tmp = `${image}.tmp`;
  rmSync(tmp, { force: true });
  const r = spawnSync('mksquashfs', [root, tmp, '-noappend', '-quiet', '-no-progress', '-all-root'], { encoding: 'utf8' });
  if (r.status !== 0) throw new StrataError('DEMO_FAILED', `Cannot pack the big disk: mksquashfs: ${(r.stderr || r.error?.message || '').trim()}`, { value: image, hint: 'apt-get install squashfs-tools' });
  renameSync(tmp, image);
  const disk: BigDisk = { image, generation, packages: packages.length, paths };
  writeFileSync(meta, JSON.stringify(disk));
  rmSync(root, { recursive: true, force: true });
  return { ...disk, reused: false };
}

/** Mounts an image read-only through a loop device (as a platform attaches a disk). */
export function attachImage(image: string, mountPoint: string): void {
  mkdirSync(mountPoint, { recursive: true });
  if (isMountPoint(mountPoint)) return;
  const r = spawnSync('mount', ['-o', 'loop,ro', '-t', 'squashfs', image, mountPoint], { encoding: 'utf8' });
  if (r.status !== 0) throw new StrataError('MOUNT_FAILED', `Cannot attach '${image}': ${r.stderr.trim()}`, { value: image });
}

/** Binds `from` at `to`, over whatever is mounted there (a redeploy stacks the new disk on top). */
export function bindOver(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  const r = spawnSync('mount', ['--bind', from, to], { encoding: 'utf8' });
  if (r.status !== 0) throw new StrataError('MOUNT_FAILED', `Cannot bind '${from}' at '${to}': ${r.stderr.trim()}`, { value: to });
}

export function isMountPoint(path: string): boolean {
  return spawnSync('mountpoint', ['-q', path]).status === 0;
}
