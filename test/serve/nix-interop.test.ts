import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { generateKeyPair, parseSecretKey } from '../../src/core/signature.js';
import { StoreDir } from '../../src/core/store-path.js';
import { CacheServer } from '../../src/serve/cache-server.js';
import { listen } from '../../src/serve/listen.js';
import { openStore } from '../../src/store/open.js';
import { haveNix } from '../support/nix.js';
import { storeView } from '../support/store-view.js';
import { tempDir } from '../support/tmp.js';
import { DEPENDENT, PUBLIC_KEY, SECRET_KEY } from '../binary-cache/_cache.js';
import { filledStore, nixAsync } from './_serve.js';

const dir = new StoreDir();
const SIMPLE = '/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple';

/** Real Nix's own chroot store (`work/nixstore`) holding DEPENDENT's closure, fetched from a strata server. */
async function nixStoreWithClosure(work: string, compression: 'none' | 'xz' | 'zstd'): Promise<string> {
  const src = await filledStore(work);
  const reader = new CacheServer(src, { compression });
  const lr = await listen(reader, { host: '127.0.0.1', port: 0 });
  const nixStore = join(work, 'nixstore');
  try {
    const r = await nixAsync('nix-store', ['--store', nixStore, '-r', DEPENDENT, '--option', 'substituters', lr.url, '--option', 'trusted-public-keys', PUBLIC_KEY]);
    expect(r.code).toBe(0);
  } finally {
    await lr.close();
    await src.close();
  }
  return nixStore;
}

describe.skipIf(!haveNix())('real Nix 2.8 substitutes from strata serve', () => {
  for (const compression of ['none', 'xz', 'zstd'] as const) {
    it(`compression=${compression}, signed on the fly: nix-store -r fetches the closure into a fresh chroot store`, async () => {
      const work = tempDir();
      const store = await filledStore(work);
      const server = new CacheServer(store, { signKey: parseSecretKey(SECRET_KEY), compression, compressionLevel: compression === 'xz' ? 1 : undefined });
      const l = await listen(server, { host: '127.0.0.1', port: 0 });
      try {
        const dst = join(work, 'dst');
        const r = await nixAsync('nix-store', ['--store', dst, '-r', DEPENDENT, '--option', 'substituters', l.url, '--option', 'trusted-public-keys', PUBLIC_KEY]);
        expect(r.stderr).toContain(`copying path '${DEPENDENT}' from '${l.url}'`);
        expect(r.code).toBe(0);
        expect(readFileSync(join(dst, DEPENDENT.slice(1)), 'utf8')).toBe(readFileSync(store.realPath(dir.parse(DEPENDENT)), 'utf8'));
        expect(existsSync(join(dst, SIMPLE.slice(1)))).toBe(true);
        const v = await nixAsync('nix-store', ['--store', dst, '--verify-path', DEPENDENT]);
        expect(v.code).toBe(0);
        expect(server.metrics.render()).toMatch(/strata_serve_requests_total\{route="nar",status="200"\} 2/);
      } finally {
        await l.close();
        await store.close();
      }
    });
  }

  it('refuses paths signed by a key Nix does not trust', async () => {
    const work = tempDir();
    const store = await filledStore(work);
    // The store's own paths carry the vector key's signatures: strip them by serving through a
    // store view with no sigs, so only the untrusted on-the-fly signature remains.
    const bare = storeView(store, {
      queryPathInfo: async (p) => {
        const info = await store.queryPathInfo(p);
        return info && { ...info, sigs: [] };
      },
    });
    const server = new CacheServer(bare, { signKey: generateKeyPair('other-key-1').secretKey, compression: 'zstd' });
    const l = await listen(server, { host: '127.0.0.1', port: 0 });
    try {
      const dst = join(work, 'dst');
      const r = await nixAsync('nix-store', ['--store', dst, '-r', DEPENDENT, '--option', 'substituters', l.url, '--option', 'trusted-public-keys', PUBLIC_KEY]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain("is not signed by any of the keys in 'trusted-public-keys'");
      expect(existsSync(join(dst, DEPENDENT.slice(1)))).toBe(false);
    } finally {
      await l.close();
      await store.close();
    }
  });

  it('nix copy --to http://…?write-nar-listing=true uploads into a --writable strata serve (the .ls files are taken)', async () => {
    const work = tempDir();
    const nixStore = await nixStoreWithClosure(work, 'none');
    const target = await openStore(join(work, 'target'));
    const server = new CacheServer(target, { writable: true });
    const l = await listen(server, { host: '127.0.0.1', port: 0 });
    try {
      const r = await nixAsync('nix', ['copy', '--store', nixStore, '--to', `${l.url}?compression=xz&write-nar-listing=true`, DEPENDENT]);
      expect(r.stderr).not.toMatch(/error|warning/);
      expect(r.code).toBe(0);
      expect(await target.isValidPath(dir.parse(DEPENDENT))).toBe(true);
      expect(await target.isValidPath(dir.parse(SIMPLE))).toBe(true);
      // Taken, not offered.
      expect((await server.handle({ method: 'GET', url: `/${dir.parse(SIMPLE).hashPart}.ls` })).status).toBe(404);
    } finally {
      await l.close();
      await server.close();
      await target.close();
    }
  });

  it('a Nix that uploaded with nix copy --to http:// substitutes back through the narinfo it remembers (the uploaded NAR file is served)', async () => {
    const work = tempDir();
    const nixStore = await nixStoreWithClosure(work, 'none');
    const target = await openStore(join(work, 'target'));
    const server = new CacheServer(target, { writable: true });
    const l = await listen(server, { host: '127.0.0.1', port: 0 });
    // One narinfo disk cache for both runs, as one user's.
    const env = { XDG_CACHE_HOME: join(work, 'xdg') };
    try {
      const up = await nixAsync('nix', ['copy', '--store', nixStore, '--to', `${l.url}?compression=xz`, DEPENDENT], env);
      expect(up.code).toBe(0);
      const down = await nixAsync('nix-store', ['--store', join(work, 'back'), '-r', DEPENDENT, '--option', 'substituters', l.url, '--option', 'trusted-public-keys', PUBLIC_KEY], env);
      expect(down.stderr).not.toMatch(/error/);
      expect(down.code).toBe(0);
      expect(existsSync(join(work, 'back', SIMPLE.slice(1)))).toBe(true);
    } finally {
      await l.close();
      await server.close();
      await target.close();
    }
  });

  it('nix copy --to http:// uploads into a --writable strata serve, verified into its store', async () => {
    const work = tempDir();
    const nixStore = await nixStoreWithClosure(work, 'zstd');
    const target = await openStore(join(work, 'target'));
    const server = new CacheServer(target, { writable: true });
    const l = await listen(server, { host: '127.0.0.1', port: 0 });
    try {
      const r = await nixAsync('nix', ['copy', '--store', nixStore, '--to', `${l.url}?compression=zstd`, DEPENDENT]);
      expect(r.stderr).not.toMatch(/error|warning/);
      expect(r.code).toBe(0);
      const info = await target.queryPathInfo(dir.parse(DEPENDENT));
      expect(info?.references.map((p) => p.name)).toEqual(['simple']);
      expect(await target.isValidPath(dir.parse(SIMPLE))).toBe(true);
      expect(server.metrics.render()).toContain('strata_serve_uploads_total{result="ok"} 2');
      // Read-only servers refuse the same upload.
      const ro = new CacheServer(await openStore(join(work, 'ro')));
      const l2 = await listen(ro, { host: '127.0.0.1', port: 0 });
      try {
        const r2 = await nixAsync('nix', ['copy', '--store', nixStore, '--to', l2.url, DEPENDENT]);
        expect(r2.code).not.toBe(0);
        expect(await ro.store.isValidPath(dir.parse(SIMPLE))).toBe(false);
      } finally {
        await l2.close();
        await ro.store.close();
      }
    } finally {
      await l.close();
      await server.close();
      await target.close();
    }
  });
});
