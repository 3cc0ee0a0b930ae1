/**
 * The Store contract (test/support/store-contract.ts) against the local store, the layered
 * store (root: a real overlayfs), and `file://` and `http://` binary caches (strata serve,
 * `--writable`, on loopback). The S3 backend runs it in test/s3/s3.test.ts, beside its server.
 */
import { join } from 'node:path';

import { describe } from 'vitest';

import { CacheServer } from '../../src/serve/cache-server.js';
import { listen } from '../../src/serve/listen.js';
import { initLayered } from '../../src/store/layered/open-layered.js';
import { openStore } from '../../src/store/open.js';
import { makeLower } from '../support/layered.js';
import { isRoot } from '../support/mounts.js';
import { storeContract } from '../support/store-contract.js';
import { tempDir } from '../support/tmp.js';

describe('local store', () => {
  storeContract(async () => {
    const store = await openStore(join(tempDir(), 'store'));
    return { store, close: () => store.close() };
  });
});

describe.runIf(isRoot)('layered store', () => {
  storeContract(async () => {
    const work = tempDir();
    const lower = await makeLower(join(work, 'lower'));
    const store = await initLayered(join(work, 'layered'), [lower.root]);
    return { store, close: () => store.close() };
  });
});

describe('file:// binary cache', () => {
  storeContract(async () => {
    const work = tempDir();
    process.env['XDG_CACHE_HOME'] = join(work, 'xdg');
    const store = await openStore(`file://${join(work, 'cache')}?compression=xz`);
    return { store, close: () => store.close() };
  });
});

describe('http:// binary cache (strata serve --writable)', () => {
  storeContract(async () => {
    const work = tempDir();
    process.env['XDG_CACHE_HOME'] = join(work, 'xdg');
    const target = await openStore(join(work, 'served'));
    const server = new CacheServer(target, { writable: true });
    const l = await listen(server, { host: '127.0.0.1', port: 0 });
    const store = await openStore(`${l.url}?compression=zstd`);
    return {
      store,
      close: async () => {
        await store.close();
        await l.close();
        await server.close();
        await target.close();
      },
    };
  }, { canList: false });
});
