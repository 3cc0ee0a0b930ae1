/**
 * Closures and copy-up of a layered store, metadata only (no mount needed): the batched routes
 * (`LayeredStore.queryClosure`, `copyUpRows`) must give exactly what the member-by-member rules
 * give (upper first, else the first lower; rows copied unchanged, references first).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import Database from 'better-sqlite3';
import { describe, expect, it, vi } from 'vitest';

import { Hash } from '../../src/core/hash.js';
import type { StorePath } from '../../src/core/store-path.js';
import { computeClosure } from '../../src/store/closure.js';
import { writeLayeredConfig } from '../../src/store/layered/config.js';
import type { LayeredStore } from '../../src/store/layered/layered-store.js';
import { openLayered } from '../../src/store/layered/open-layered.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import type { PathInfo, Registration, Store } from '../../src/store/store.js';
import { tempDir } from '../support/tmp.js';

/** A made-up row (metadata only: copy-up and closures never look at files). */
function info(store: Store, name: string, references: StorePath[], sigs: string[] = []): PathInfo {
  const path = store.storeDir.makeTextPath(name, Hash.of('sha256', name), references);
  return { path, narHash: Hash.of('sha256', `nar of ${name}`), narSize: 100 + name.length, references, ultimate: false, sigs, registrationTime: 1_600_000_000 };
}

interface Fixture {
  work: string;
  store: LayeredStore;
  lower1Db: string;
  p: Record<'shared' | 'leaf' | 'mid' | 'top' | 'drv' | 'own', StorePath>;
}

/**
 * lower0 holds `shared` (signed a:1); lower1 holds `shared` (signed b:1), `leaf`, `mid` → leaf,
 * shared, `top` → mid and a `.drv` whose output is `top`, registered top first (ids not in
 * reference order); the upper holds a signed copy of `leaf` and its own `own` → leaf.
 */
async function fixture(): Promise<Fixture> {
  const work = tempDir();
  const roots = [join(work, 'lower0'), join(work, 'lower1')];
  const l0 = (await openStore(roots[0]!)) as LocalStore;
  const shared0 = info(l0, 'shared', [], ['a:1']);
  await l0.registerValidPaths([{ info: shared0 }]);
  await l0.close();
  const l1 = (await openStore(roots[1]!)) as LocalStore;
  const shared = info(l1, 'shared', [], ['b:1']);
  const leaf = info(l1, 'leaf', []);
  const mid = info(l1, 'mid', [leaf.path, shared.path]);
  const top = info(l1, 'top', [mid.path]);
  const drv = info(l1, 'top.drv', []);
  const batch: Registration[] = [{ info: top }, { info: mid }, { info: leaf }, { info: shared }, { info: drv, derivationOutputs: new Map([['out', l1.storeDir.print(top.path)]]) }];
  await l1.registerValidPaths(batch);
  await l1.close();
  const dir = join(work, 'layered');
  mkdirSync(dir, { recursive: true });
  writeLayeredConfig(dir, { version: 1, lowers: roots.map((uri, i) => ({ uri, name: `lower${i}` })), trustedPublicKeys: [], substituters: [] });
  process.env['XDG_CACHE_HOME'] = join(work, 'xdg');
  const store = await openLayered(`layered://${dir}`, dir, { mount: false });
  await store.addSignatures(leaf.path, ['u:1']); // copies leaf up, then signs the upper row
  const own = info(store, 'own', [leaf.path]);
  await store.upper.registerValidPaths([{ info: own }]);
  return { work, store, lower1Db: join(roots[1]!, 'nix/var/nix/db/db.sqlite'), p: { shared: shared.path, leaf: leaf.path, mid: mid.path, top: top.path, drv: drv.path, own: own.path } };
}

/** `computeClosure` over a store that only has `queryPathInfo`: the member-by-member rules. */
async function walk(store: Store, paths: StorePath[]): Promise<Map<string, PathInfo>> {
  const plain = { uri: store.uri, storeDir: store.storeDir, queryPathInfo: (p: StorePath) => store.queryPathInfo(p) } as unknown as Store;
  return computeClosure(plain, paths);
}

describe('layered closures', () => {
  it('answer every member as queryPathInfo does, in batched queries, with the layer', async () => {
    const { store, p } = await fixture();
    try {
      const expected = await walk(store, [p.top, p.own]);
      const spies = [vi.spyOn(store, 'queryPathInfo'), ...store.lowers.map((l) => vi.spyOn(l.store, 'queryPathInfo')), vi.spyOn(store.upper, 'queryPathInfo')];
      const got = await computeClosure(store, [p.top, p.own]);
      for (const s of spies) expect(s).not.toHaveBeenCalled();
      expect([...got.keys()].sort()).toEqual([...expected.keys()].sort());
      for (const [k, v] of expected) expect(got.get(k)).toEqual(v);
      // The rules, spelled out: upper rows first, else the first lower that has the path.
      expect(got.get(p.leaf.baseName)!.sigs).toContain('u:1');
      expect(got.get(p.leaf.baseName)!.layer).toBe('lower1'); // its files are the lower's
      expect(got.get(p.own.baseName)!.layer).toBe('upper');
      expect(got.get(p.shared.baseName)).toMatchObject({ layer: 'lower0', sigs: ['a:1'] });
      expect(got.get(p.top.baseName)!.layer).toBe('lower1');
    } finally {
      await store.close();
    }
  });

  it('refuses a start path no layer has, naming it', async () => {
    const { store, p } = await fixture();
    try {
      const ghost = store.storeDir.makeTextPath('ghost', Hash.of('sha256', 'ghost'), []);
      await expect(computeClosure(store, [p.top, ghost])).rejects.toMatchObject({ code: 'PATH_NOT_VALID', value: store.storeDir.print(ghost) });
    } finally {
      await store.close();
    }
  });

  it('a local store answers its own closures in one go, equal to the walk', async () => {
    const { store, p } = await fixture();
    try {
      const lower1 = store.lowers[1]!.store;
      const spy = vi.spyOn(lower1, 'queryPathInfo');
      const got = await computeClosure(lower1, [p.top]);
      expect(spy).not.toHaveBeenCalled();
      spy.mockRestore();
      const expected = await walk(lower1, [p.top]);
      expect([...got.keys()].sort()).toEqual([...expected.keys()].sort());
      for (const [k, v] of expected) expect(got.get(k)).toEqual(v);
    } finally {
      await store.close();
    }
  });
});

describe('layered copy-up', () => {
  const columns = 'path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca';

  it('writes the lower rows unchanged, references first, with derivation outputs, and keeps upper rows', async () => {
    const { store, p, lower1Db } = await fixture();
    try {
      expect(await store.copyUp([p.top, p.drv])).toEqual([p.top, p.drv]);
      const upper = store.upper.db.db;
      const lower = new Database(lower1Db, { readonly: true });
      try {
        for (const q of [p.top, p.mid, p.drv]) {
          const full = store.storeDir.print(q);
          const sql = `SELECT ${columns} FROM ValidPaths WHERE path = ?`;
          expect(upper.prepare(sql).get(full)).toEqual(lower.prepare(sql).get(full));
        }
        const outputs = 'SELECT d.id, d.path FROM DerivationOutputs d JOIN ValidPaths v ON v.id = d.drv WHERE v.path = ?';
        expect(upper.prepare(outputs).all(store.storeDir.print(p.drv))).toEqual(lower.prepare(outputs).all(store.storeDir.print(p.drv)));
        expect(upper.prepare(outputs).all(store.storeDir.print(p.drv))).toHaveLength(1);
      } finally {
        lower.close();
      }
      // The upper's signed copy of leaf is kept, not masked by the lower's row.
      expect((await store.upper.queryPathInfo(p.leaf))!.sigs).toContain('u:1');
      // The lower registered top before mid; the upper has every reference before its referrer.
      const id = (q: StorePath) => (upper.prepare('SELECT id FROM ValidPaths WHERE path = ?').get(store.storeDir.print(q)) as { id: number }).id;
      expect(id(p.leaf)).toBeLessThan(id(p.mid));
      expect(id(p.shared)).toBeLessThan(id(p.mid));
      expect(id(p.mid)).toBeLessThan(id(p.top));
      // References in the upper are the lower's.
      expect((await store.upper.queryPathInfo(p.mid))!.references.map((r) => r.baseName).sort()).toEqual([p.leaf, p.shared].map((r) => r.baseName).sort());
      // Asking again writes nothing, takes no write lock, and still finds them.
      const before = store.upper.db.countValid();
      const tx = vi.spyOn(store.upper.db, 'transaction');
      expect(await store.copyUp([p.top])).toEqual([p.top]);
      expect(tx).not.toHaveBeenCalled();
      expect(store.upper.db.countValid()).toBe(before);
    } finally {
      await store.close();
    }
  });

  it('takes a path from the first lower that has it and reports what no lower has', async () => {
    const { store, p } = await fixture();
    try {
      const ghost = store.storeDir.makeTextPath('ghost', Hash.of('sha256', 'ghost'), []);
      expect(await store.copyUp([ghost, p.shared])).toEqual([p.shared]);
      expect((await store.upper.queryPathInfo(p.shared))!.sigs).toEqual(['a:1']);
      expect(await store.upper.isValidPath(ghost)).toBe(false);
    } finally {
      await store.close();
    }
  });

  it('adding a path whose references the upper has reads no lower for them', async () => {
    const { store, p } = await fixture();
    try {
      await store.copyUp([p.top]);
      const reads = store.lowers.map((l) => vi.spyOn((l.store as LocalStore).db, 'queryClosureRows'));
      const added = await store.addText('user', `uses ${store.storeDir.print(p.top)}\n`, [p.top]);
      // The lowers are asked for the new path itself (a lower may have it: then nothing is written), not for its references.
      const asked = reads.flatMap((r) => r.mock.calls.flatMap(([paths]) => paths.map((q) => q.baseName)));
      expect(asked).toEqual([added.path.baseName, added.path.baseName]);
      expect((await store.queryPathInfo(added.path))!.references).toEqual([p.top]);
    } finally {
      await store.close();
    }
  });
});

describe('closure sizes', () => {
  it('are counted in SQL, equal to the sum over the closure', async () => {
    const { store, p } = await fixture();
    try {
      const lower1 = store.lowers[1]!.store as LocalStore;
      const infos = [...(await walk(lower1, [p.top, p.drv])).values()];
      expect(lower1.db.queryClosureSize([p.top, p.drv])).toEqual({ paths: infos.length, bytes: infos.reduce((n, i) => n + i.narSize, 0) });
      expect(infos.length).toBe(5);
      expect(lower1.db.queryClosureSize([])).toEqual({ paths: 0, bytes: 0 });
    } finally {
      await store.close();
    }
  });
});
