/** Shared fixtures for build tests: chroot stores, derivations from scripts, store snapshots. */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import { expect } from 'vitest';

import { realiseOrThrow } from '../../src/build/index.js';
import { type Derivation } from '../../src/core/derivation/index.js';
import type { StorePath } from '../../src/core/store-path.js';
import { addDerivation } from '../../src/store/derivation-add.js';
import { openStore } from '../../src/store/open.js';
import { isLocalFsStore, type LocalFsStore } from '../../src/store/store.js';
import { runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

/** Opens (creating) a chroot store rooted at `root`: files in `root/nix/store`, logical `/nix/store`. */
export async function openChroot(root: string): Promise<LocalFsStore> {
  const store = await openStore(root);
  if (!isLocalFsStore(store)) throw new Error('not a local store');
  return store;
}

/** Real `nix-instantiate` of `file` into a fresh chroot store: its root and the .drv paths printed. */
export function instantiate(file: string): { root: string; drvs: string[] } {
  const root = tempDir();
  const r = runNix('nix-instantiate', ['--store', root, file]);
  expect(r.code, r.stderr).toBe(0);
  return { root, drvs: r.stdout.trim().split('\n') };
}

/** A `/bin/sh -c script` derivation, like the vectors' `mk`. */
export function shDrv(
  name: string,
  script: string,
  extra: {
    env?: Record<string, string>;
    outputs?: string[];
    fixed?: { hashAlgo: string; hash: string };
    inputDrvs?: Map<string, string[]>;
    inputSrcs?: StorePath[];
  } = {},
): Derivation {
  const outs = extra.outputs ?? ['out'];
  const env = new Map<string, string>([
    ['builder', '/bin/sh'],
    ['name', name],
    ['system', 'x86_64-linux'],
    ...Object.entries(extra.env ?? {}),
  ]);
  for (const o of outs) env.set(o, '');
  if (extra.outputs) env.set('outputs', outs.join(' '));
  return {
    name,
    system: 'x86_64-linux',
    builder: '/bin/sh',
    args: ['-c', script],
    outputs: new Map(
      outs.map((o) => [
        o,
        extra.fixed && o === 'out'
          ? { hashAlgo: extra.fixed.hashAlgo, hash: extra.fixed.hash }
          : {},
      ]),
    ),
    inputDrvs: extra.inputDrvs ?? new Map(),
    inputSrcs: extra.inputSrcs ?? [],
    env,
  };
}

/** Adds a script derivation to the store and returns its `.drv` path. */
export async function addShDrv(
  store: LocalFsStore,
  name: string,
  script: string,
  extra: Parameters<typeof shDrv>[2] = {},
): Promise<StorePath> {
  return addDerivation(store, shDrv(name, script, extra));
}

/** What a test compares to prove a failed build left the store unchanged. */
export interface StoreSnapshot {
  valid: string[];
  entries: string[];
  scratch: string[];
}

/** Valid paths, the entries of the real store dir (lock files aside) and leftover build scratch. */
export async function snapshot(store: LocalFsStore): Promise<StoreSnapshot> {
  const builds = join(store.stateDir, 'builds');
  return {
    valid: (await store.queryAllValidPaths()).map((p) => p.baseName).sort(),
    entries: readdirSync(store.realStoreDir)
      .filter((e) => !e.endsWith('.lock'))
      .sort(),
    scratch: existsSync(builds) ? readdirSync(builds) : [],
  };
}

/** `dep` (no references) and `dep2` (refers to dep), built in `store`; the input map of a user of both. */
export async function twoDeps(store: LocalFsStore): Promise<{ dep: string; dep2: string; inputDrvs: Map<string, string[]> }> {
  const depDrv = await addShDrv(store, 'dep', 'echo dep > $out');
  const [d] = await realiseOrThrow(store, [depDrv]);
  const dep = store.storeDir.print(d!.get('out')!);
  const dep2Drv = await addShDrv(store, 'dep2', `echo ${dep} > $out`, {
    inputDrvs: new Map([[depDrv.baseName, ['out']]]),
  });
  const [d2] = await realiseOrThrow(store, [dep2Drv]);
  const dep2 = store.storeDir.print(d2!.get('out')!);
  const inputDrvs = new Map([
    [depDrv.baseName, ['out']],
    [dep2Drv.baseName, ['out']],
  ]);
  return { dep, dep2, inputDrvs };
}
