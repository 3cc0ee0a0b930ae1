/**
 * The Store contract (src/store/store.ts), one suite for every backend: each backend's test file
 * calls {@link storeContract} with a way to open a fresh, writable store of its kind. What every
 * backend must do alike: add paths from NARs (verifying them, references first), answer the
 * queries about them, give back the same NAR bytes, and refuse a NAR that is not the declared
 * one without making anything valid.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { expect, it } from 'vitest';

import { Hash, nix32Encode } from '../../src/core/hash.js';
import { StorePath } from '../../src/core/store-path.js';
import { dumpPathBytes } from '../../src/fs/nar-dump.js';
import { computeClosure } from '../../src/store/closure.js';
import type { PathInfo, Store } from '../../src/store/store.js';
import { tempDir } from './tmp.js';

export interface OpenedStore {
  store: Store;
  /** Closes the store and whatever serves it. */
  close: () => Promise<void>;
}

interface Added {
  info: PathInfo;
  nar: Buffer;
}

const streamOf = (bytes: Buffer) => Readable.from([bytes]);

const byName = (a: StorePath, b: StorePath) => (a.baseName < b.baseName ? -1 : a.baseName > b.baseName ? 1 : 0);

/** A path whose NAR is a small tree (a file naming its references, an executable, a symlink, a subdirectory). */
async function makePath(name: string, references: StorePath[], self: boolean): Promise<Added> {
  const path = StorePath.fromBaseName(`${nix32Encode(randomBytes(20))}-${name}`);
  const dir = join(tempDir(), 'tree');
  mkdirSync(join(dir, 'sub'), { recursive: true });
  writeFileSync(join(dir, 'data'), `${name}: ${references.map((r) => `/nix/store/${r.baseName}`).join(' ')}\n`);
  writeFileSync(join(dir, 'sub', 'run'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  symlinkSync('data', join(dir, 'link'));
  const nar = await dumpPathBytes(dir);
  const refs = (self ? [...references, path] : references).sort(byName);
  return { info: { path, narHash: Hash.of('sha256', nar), narSize: nar.length, references: refs, ultimate: false, sigs: [] }, nar };
}

/** A leaf, a path referring to it, and a top referring to both and to itself. */
async function closure(): Promise<[Added, Added, Added]> {
  const leaf = await makePath('contract-leaf', [], false);
  const mid = await makePath('contract-mid', [leaf.info.path], false);
  const top = await makePath('contract-top', [leaf.info.path, mid.info.path], true);
  return [leaf, mid, top];
}

async function bytesOf(nar: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of nar) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

const unknownPath = () => StorePath.fromBaseName(`${nix32Encode(randomBytes(20))}-contract-unknown`);

/** `canList`: false for a backend that cannot list its paths (an HTTP cache), which must then say so. */
export function storeContract(open: () => Promise<OpenedStore>, { canList = true }: { canList?: boolean } = {}): void {
  it('adds a closure from NARs, references first, and answers every query about it', async () => {
    const { store, close } = await open();
    try {
      const paths = await closure();
      for (const p of paths) await store.addFromNar(p.info, streamOf(p.nar));
      const [leaf, mid, top] = paths;
      const unknown = unknownPath();
      for (const p of paths) {
        expect(await store.isValidPath(p.info.path)).toBe(true);
        const info = await store.queryPathInfo(p.info.path);
        expect(info?.path.baseName).toBe(p.info.path.baseName);
        expect(info?.narHash.equals(p.info.narHash)).toBe(true);
        expect(info?.narSize).toBe(p.nar.length);
        expect(info?.references.map((r) => r.baseName)).toEqual(p.info.references.map((r) => r.baseName));
        expect((await bytesOf(await store.narFromPath(p.info.path))).equals(p.nar)).toBe(true);
        if (store.narBytes) expect(Buffer.from(await store.narBytes(p.info.path)).equals(p.nar)).toBe(true);
        expect((await store.queryPathFromHashPart(p.info.path.hashPart))?.baseName).toBe(p.info.path.baseName);
      }
      const valid = await store.queryValidPaths([unknown, top.info.path, leaf.info.path]);
      expect(valid.map((p) => p.baseName).sort()).toEqual([top.info.path.baseName, leaf.info.path.baseName].sort());
      expect([...(await computeClosure(store, [mid.info.path])).keys()].sort()).toEqual([leaf, mid].map((p) => p.info.path.baseName).sort());
      expect([...(await computeClosure(store, [top.info.path])).keys()].length).toBe(3);
      if (canList) {
        const all = (await store.queryAllValidPaths()).map((p) => p.baseName);
        for (const p of paths) expect(all).toContain(p.info.path.baseName);
      } else await expect(store.queryAllValidPaths()).rejects.toMatchObject({ code: 'UNSUPPORTED' });
      // Adding a path again is a no-op.
      await store.addFromNar(top.info, streamOf(top.nar));
      expect(await store.isValidPath(top.info.path)).toBe(true);
    } finally {
      await close();
    }
  });

  it('knows nothing of a path it was never given', async () => {
    const { store, close } = await open();
    try {
      const unknown = unknownPath();
      expect(await store.isValidPath(unknown)).toBe(false);
      expect(await store.queryPathInfo(unknown)).toBeUndefined();
      expect(await store.queryPathFromHashPart(unknown.hashPart)).toBeUndefined();
      expect(await store.queryValidPaths([unknown])).toEqual([]);
      await expect(store.narFromPath(unknown).then(bytesOf)).rejects.toMatchObject({ code: 'PATH_NOT_VALID' });
    } finally {
      await close();
    }
  });

  it('refuses a NAR that is not the declared one, or whose reference it lacks, and makes nothing valid', async () => {
    const { store, close } = await open();
    try {
      const [leaf, mid] = await closure();
      // Same size, other file contents: the hash is what tells.
      const wrong = Buffer.from(leaf.nar.toString('latin1').replace('contract-leaf:', 'contract-lEaf:'), 'latin1');
      expect(wrong.equals(leaf.nar)).toBe(false);
      await expect(store.addFromNar(leaf.info, streamOf(wrong))).rejects.toMatchObject({ code: 'HASH_MISMATCH' });
      expect(await store.isValidPath(leaf.info.path)).toBe(false);
      await expect(store.addFromNar({ ...leaf.info, narSize: leaf.nar.length + 1 }, streamOf(leaf.nar))).rejects.toMatchObject({ code: 'SIZE_MISMATCH' });
      expect(await store.isValidPath(leaf.info.path)).toBe(false);
      await expect(store.addFromNar(mid.info, streamOf(mid.nar))).rejects.toMatchObject({ code: 'REFERENCE_INVALID' });
      expect(await store.isValidPath(mid.info.path)).toBe(false);
    } finally {
      await close();
    }
  });
}
