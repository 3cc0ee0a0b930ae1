import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { describe, expect, it } from 'vitest';

import { contentAddressedPath, parseContentAddress, printContentAddress } from '../../src/core/content-address.js';
import { isStrataError } from '../../src/core/error.js';
import { Hash, parseHash } from '../../src/core/hash.js';
import { StoreDir } from '../../src/core/store-path.js';
import { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { tempDir } from '../support/tmp.js';
import { buildTree } from '../support/tree.js';
import { loadVector } from '../support/vectors.js';

const nar = loadVector('nar.json');

async function openLocal(root: string): Promise<LocalStore> {
  return (await openStore(root)) as LocalStore;
}

describe('LocalStore.addPath against Nix 2.8 (nar.json)', () => {
  for (const c of nar.cases) {
    it(`${c.name}: same path, DB row and path-info as nix-store --add`, async () => {
      const work = tempDir();
      const src = join(work, c.name);
      buildTree(src, c.root);
      const store = await openLocal(join(work, 'store'));
      try {
        const info = await store.addPath(src);
        const dir = store.storeDir;
        expect(dir.print(info.path)).toBe(c.nix_store_add);
        expect(info.narHash.toSri()).toBe(c.path_info.narHash);
        expect(info.narSize).toBe(c.path_info.narSize);
        expect(info.ca).toBe(c.path_info.ca);
        const row = store.db.db.prepare('SELECT path, hash, deriver, narSize, ultimate, sigs, ca FROM ValidPaths WHERE path = ?').get(c.nix_store_add);
        const { references: _r, ...want } = c.db_row;
        expect(row).toEqual(want);
        // Canonical metadata on disk: mtime 1, read-only modes.
        const st = lstatSync(store.realPath(info.path));
        expect(st.mtimeMs).toBe(1000);
        if (c.root.type !== 'symlink') {
          expect(st.mode & 0o777).toBe(c.root.type === 'directory' || c.root.executable ? 0o555 : 0o444);
        }
        for (const [algo, want] of Object.entries(c.add_fixed_recursive as Record<string, string>)) {
          const i = await store.addPath(src, { hashAlgo: algo as 'sha1' });
          expect(dir.print(i.path)).toBe(want);
        }
      } finally {
        await store.close();
      }
    });
  }
});

describe('LocalStore basics', () => {
  it('adds text with references and answers every query', async () => {
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    try {
      const a = await store.addText('a.txt', 'A', []);
      expect(store.storeDir.print(a.path)).toBe('/nix/store/l82nr4gna33sc2g8m4hkkr6r983dlbd6-a.txt');
      const b = await store.addText('b.txt', 'refers to /nix/store/l82nr4gna33sc2g8m4hkkr6r983dlbd6-a.txt\n', [a.path]);
      expect(store.storeDir.print(b.path)).toBe('/nix/store/65090g4v2x8z5ywrsmm7k8d2k60rmwcw-b.txt');
      expect((await store.queryReferrers(a.path)).map(String)).toEqual([b.path.baseName]);
      expect((await store.queryPathInfo(b.path))!.references.map(String)).toEqual([a.path.baseName]);
      expect((await store.queryPathFromHashPart(a.path.hashPart))!.equals(a.path)).toBe(true);
      expect(await store.queryPathFromHashPart('0'.repeat(32))).toBeUndefined();
      expect((await store.queryAllValidPaths()).length).toBe(2);
      expect(readFileSync(store.realPath(b.path), 'utf8')).toContain('refers to');
      expect(readFileSync(join(work, 's/nix/var/nix/db/schema'), 'utf8')).toBe('10');
    } finally {
      await store.close();
    }
  });

  it('refuses a flat add of a directory or symlink with a clear error, staging nothing', async () => {
    const work = tempDir();
    mkdirSync(join(work, 'dir'));
    writeFileSync(join(work, 'file'), 'x');
    symlinkSync('file', join(work, 'link'));
    const store = await openLocal(join(work, 's'));
    try {
      for (const name of ['dir', 'link']) {
        const p = join(work, name);
        await expect(store.addPath(p, { method: 'flat' })).rejects.toMatchObject({ code: 'NOT_A_FILE', message: `Cannot add '${p}' flat: it is not a regular file` });
      }
      expect(readdirSync(join(work, 's/nix/store'))).toEqual([]);
      expect(await store.queryAllValidPaths()).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('refuses a NAR whose hash or size differs from the declared info, leaving nothing', async () => {
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    try {
      const c = nar.cases[0];
      const bytes = Buffer.from(c.nar_b64, 'base64');
      const dir = new StoreDir();
      const path = dir.parse(c.nix_store_add);
      const good = { path, narHash: parseHash(`sha256:${c.nar_sha256_hex}`), narSize: c.nar_size, references: [], ultimate: false, sigs: [] };
      await expect(store.addFromNar({ ...good, narHash: Hash.of('sha256', 'other') }, Readable.from([bytes]))).rejects.toMatchObject({ code: 'HASH_MISMATCH' });
      await expect(store.addFromNar({ ...good, narSize: c.nar_size + 8 }, Readable.from([bytes]))).rejects.toMatchObject({ code: 'SIZE_MISMATCH' });
      expect(await store.isValidPath(path)).toBe(false);
      const { readdirSync } = await import('node:fs');
      expect(readdirSync(join(work, 's/nix/store')).filter((n) => !n.endsWith('.lock'))).toEqual([]);
      await store.addFromNar({ ...good, ca: c.path_info.ca }, Readable.from([bytes]));
      expect(await store.isValidPath(path)).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('refuses a reference to an invalid path and a wrong content address', async () => {
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    try {
      const ghost = new StoreDir().parse('/nix/store/l82nr4gna33sc2g8m4hkkr6r983dlbd6-a.txt');
      await expect(store.addText('b.txt', 'x', [ghost])).rejects.toMatchObject({ code: 'REFERENCE_INVALID' });
      const c = nar.cases[0];
      const bytes = Buffer.from(c.nar_b64, 'base64');
      const info = { path: new StoreDir().parse(c.nix_store_add), narHash: parseHash(`sha256:${c.nar_sha256_hex}`), narSize: c.nar_size, references: [], ultimate: false, sigs: [], ca: `fixed:r:sha256:${Hash.of('sha256', 'x').toNix32()}` };
      const err = await store.addFromNar(info, Readable.from([bytes])).catch((e: unknown) => e);
      expect(isStrataError(err, 'CA_MISMATCH')).toBe(true);
      expect(await store.isValidPath(info.path)).toBe(false);
    } finally {
      await store.close();
    }
  });

  it('checks a recursive sha256 address against the NAR hash: a path made from another hash is refused, the right one added', async () => {
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    try {
      const c = nar.cases[0];
      const bytes = Buffer.from(c.nar_b64, 'base64');
      const narHash = parseHash(`sha256:${c.nar_sha256_hex}`);
      const infoFor = (h: Hash) => {
        const ca = parseContentAddress(`fixed:r:sha256:${h.toNix32()}`);
        // The path this address gives, so only the content check can refuse it.
        return { path: contentAddressedPath(store.storeDir, ca, 'claimed'), narHash, narSize: c.nar_size, references: [], ultimate: false, sigs: [], ca: printContentAddress(ca) };
      };
      const lie = infoFor(Hash.of('sha256', 'not these bytes'));
      const err = await store.addFromNar(lie, Readable.from([bytes])).catch((e: unknown) => e);
      expect(err, String(err)).toMatchObject({ code: 'CA_MISMATCH', message: expect.stringContaining('content hash mismatch') });
      expect(await store.isValidPath(lie.path)).toBe(false);
      const truth = infoFor(narHash);
      await store.addFromNar(truth, Readable.from([bytes]));
      expect(await store.isValidPath(truth.path)).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('checks self-referencing content addresses modulo their own hash (make-content-addressed vector)', async () => {
    const mca = loadVector('make-content-addressed.json').cases[0];
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    const dir = store.storeDir;
    const infoOf = (full: string, narB64: string) => {
      const pi = mca.new[full].path_info;
      return { path: dir.parse(full), narHash: parseHash(pi.narHash), narSize: pi.narSize, references: (pi.references as string[]).map((r) => dir.parse(r)), ultimate: false, sigs: [], ca: pi.ca as string, nar: Buffer.from(narB64, 'base64') };
    };
    try {
      const items = Object.keys(mca.new).map((full) => infoOf(full, mca.new[full].nar_b64));
      // References first: the one without references, then its referrers.
      items.sort((a, b) => a.references.filter((r) => !r.equals(a.path)).length - b.references.filter((r) => !r.equals(b.path)).length);
      const self = items.find((i) => i.references.some((r) => r.equals(i.path)))!;
      expect(self).toBeDefined();
      for (const { nar: bytes, ...info } of items) if (!info.path.equals(self.path)) await store.addFromNar(info, Readable.from([bytes]));
      // A NAR that keeps the claim but not the content (hash and size declared honestly) is refused.
      const tampered = Buffer.from(self.nar);
      tampered[tampered.indexOf('hash:')]! ^= 0x20; // 'hash:' → 'Hash:' in the file's contents
      const { nar: _n, ...selfInfo } = self;
      const err = await store.addFromNar({ ...selfInfo, narHash: Hash.of('sha256', tampered) }, Readable.from([tampered])).catch((e: unknown) => e);
      expect(err, String(err)).toMatchObject({ code: 'CA_MISMATCH' });
      expect(await store.isValidPath(self.path)).toBe(false);
      await store.addFromNar(selfInfo, Readable.from([self.nar]));
      expect(await store.isValidPath(self.path)).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('opens read-only without writing or locking, and refuses writes', async () => {
    const work = tempDir();
    const root = join(work, 's');
    const rw = await openLocal(root);
    await rw.addText('a.txt', 'A', []);
    await rw.close();
    chmodSync(join(root, 'nix/var/nix/db'), 0o555);
    const before = statSync(join(root, 'nix/var/nix/db/db.sqlite')).mtimeMs;
    const ro = await openLocal(`${root}?read-only=true`);
    try {
      expect((await ro.queryAllValidPaths()).length).toBe(1);
      await expect(ro.addText('b.txt', 'B', [])).rejects.toMatchObject({ code: 'STORE_READ_ONLY' });
    } finally {
      await ro.close();
      chmodSync(join(root, 'nix/var/nix/db'), 0o755);
    }
    expect(statSync(join(root, 'nix/var/nix/db/db.sqlite')).mtimeMs).toBe(before);
  });

  it('refuses a corrupt or newer-schema database', async () => {
    const work = tempDir();
    const root = join(work, 's');
    const rw = await openLocal(root);
    await rw.close();
    writeFileSync(join(root, 'nix/var/nix/db/schema'), '11');
    await expect(openLocal(root)).rejects.toMatchObject({ code: 'DB_SCHEMA' });
    writeFileSync(join(root, 'nix/var/nix/db/schema'), 'garbage');
    await expect(openLocal(root)).rejects.toMatchObject({ code: 'DB_CORRUPT' });
    writeFileSync(join(root, 'nix/var/nix/db/schema'), '10');
    writeFileSync(join(root, 'nix/var/nix/db/db.sqlite'), 'this is not a database, just some text padding it out'.repeat(100));
    await expect(openLocal(root)).rejects.toThrow();
  });
});
