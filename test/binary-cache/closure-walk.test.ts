/**
 * A cache's closure as the client walks it: one closure request (strata serve's `closure/`)
 * shared by whoever asks while it is in flight, the walk answered from the narinfos it brought,
 * and the same answers narinfo by narinfo from a cache without the endpoint, missing members
 * reported as the generic walk reports them.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { isStrataError } from '../../src/core/error.js';
import { StoreDir } from '../../src/core/store-path.js';
import { CacheServer } from '../../src/serve/cache-server.js';
import { listen } from '../../src/serve/listen.js';
import type { BinaryCacheStore } from '../../src/store/binary-cache/binary-cache-store.js';
import { computeClosure } from '../../src/store/closure.js';
import { openStore } from '../../src/store/open.js';
import { tempDir } from '../support/tmp.js';
import { filledStore } from '../serve/_serve.js';
import { DEPENDENT, writeVectorCache } from './_cache.js';

const dir = new StoreDir();
const DEP = dir.parse(DEPENDENT);
/** The path the vectors' `dependent` refers to. */
const SIMPLE = dir.parse('/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple');

const names = (infos: Iterable<{ path: { baseName: string } }>) => [...infos].map((i) => i.path.baseName).sort();

describe('a cache closure walk', () => {
  it('from strata serve: concurrent prefetches share one closure request, and the walk asks for no narinfo', async () => {
    const work = tempDir();
    const src = await filledStore(work);
    const server = new CacheServer(src, { compression: 'none' });
    const l = await listen(server, { host: '127.0.0.1', port: 0 });
    process.env['XDG_CACHE_HOME'] = join(work, 'xdg');
    const cache = (await openStore(`${l.url}?ttl-positive=0&ttl-negative=0`)) as BinaryCacheStore;
    try {
      expect(cache.closureEndpoint).toBe(true);
      await Promise.all([cache.prefetchClosure([DEP]), cache.prefetchClosure([DEP])]);
      const closure = await cache.queryClosure([DEP]);
      expect(names(closure)).toEqual(names((await computeClosure(src, [DEP])).values()));
      const m = server.metrics.render();
      expect(m).toContain('strata_serve_requests_total{route="closure",status="200"} 1\n');
      expect(m).not.toContain('route="narinfo"');
    } finally {
      await cache.close();
      await l.close();
      await src.close();
    }
  });

  it('from a static cache: the same closure narinfo by narinfo; a missing member is PATH_NOT_VALID, a missing start path left out', async () => {
    const work = tempDir();
    const root = join(work, 'static');
    writeVectorCache(root, 'none');
    const cache = (await openStore(`file://${root}`)) as BinaryCacheStore;
    try {
      expect(cache.closureEndpoint).toBe(false);
      const closure = await cache.queryClosure([DEP]);
      expect(closure.map((i) => i.path.name).sort()).toEqual(['dependent', 'simple']);
      const absent = dir.parse(`/nix/store/${'0'.repeat(32)}-absent`);
      expect(names(await cache.queryClosure([DEP, absent]))).toEqual(names(closure));
    } finally {
      await cache.close();
    }
    // Without the narinfo of `simple`, a reference of `dependent`.
    rmSync(join(root, `${SIMPLE.hashPart}.narinfo`));
    const broken = (await openStore(`file://${root}`)) as BinaryCacheStore;
    try {
      const e = await broken.queryClosure([DEP]).catch((x: unknown) => x);
      expect(isStrataError(e, 'PATH_NOT_VALID'), String(e)).toBe(true);
      expect((e as Error).message).toBe(`Cannot compute the closure of '${dir.print(SIMPLE)}': it is not valid in 'file://${root}'`);
    } finally {
      await broken.close();
    }
  });
});

