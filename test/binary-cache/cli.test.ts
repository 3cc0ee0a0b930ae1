import { spawn } from 'node:child_process';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { StoreDir } from '../../src/core/store-path.js';
import { openStore } from '../../src/store/open.js';
import { ensureBuilt, ROOT, runStrata } from '../support/cli.js';
import { haveNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { filledStore, nixAsync } from '../serve/_serve.js';
import { DEPENDENT, PUBLIC_KEY, writeKeys, writeVectorCache } from './_cache.js';

const dir = new StoreDir();

beforeAll(() => ensureBuilt());

describe.skipIf(!haveNix())('strata copy and strata serve on the command line, with real Nix', () => {
  for (const compression of ['xz', 'zstd', 'bzip2', 'none']) {
    it(`strata copy --from a file:// cache that nix copy wrote (compression=${compression})`, async () => {
      const work = tempDir();
      const { sk } = writeKeys(work);
      // Real Nix's chroot store, filled from a strata server, then nix copy --to file://.
      const src = await filledStore(work);
      await src.close();
      const { CacheServer } = await import('../../src/serve/cache-server.js');
      const { listen } = await import('../../src/serve/listen.js');
      const s2 = await openStore(join(work, 'local'));
      const l = await listen(new CacheServer(s2), { host: '127.0.0.1', port: 0 });
      const nixStore = join(work, 'nix');
      try {
        expect((await nixAsync('nix-store', ['--store', nixStore, '-r', DEPENDENT, '--option', 'substituters', l.url, '--option', 'trusted-public-keys', PUBLIC_KEY])).code).toBe(0);
      } finally {
        await l.close();
        await s2.close();
      }
      const cacheDir = join(work, 'nixcache');
      const c = await nixAsync('nix', ['copy', '--store', nixStore, '--to', `file://${cacheDir}?compression=${compression}&secret-key=${sk}`, DEPENDENT]);
      expect(c.code, c.stderr).toBe(0);
      const dst = join(work, 'dst');
      const r = await runStrata(['--no-progress', '--trusted-public-keys', PUBLIC_KEY, 'copy', '--from', `file://${cacheDir}`, '--to', dst, '-r', DEPENDENT]);
      expect(r.stderr).toBe('copied 2 paths (0 already present)\n');
      expect(r.code).toBe(0);
      const v = await nixAsync('nix-store', ['--store', dst, '--verify', '--check-contents']);
      expect(v.code, v.stderr).toBe(0);
      // Without the key: refused, nothing copied.
      const dst2 = join(work, 'dst2');
      const bad = await runStrata(['copy', '--from', `file://${cacheDir}`, '--to', dst2, '-r', DEPENDENT]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/^error: Cannot copy '\/nix\/store\/.*' from 'file:\/\/.*': it is not signed by any of the keys in 'trusted-public-keys'\nhint: /);
      const d2 = await openStore(dst2);
      expect(await d2.queryAllValidPaths()).toEqual([]);
      await d2.close();
    });
  }

  it('path-info --json of a binary cache: url, downloadHash, downloadSize (and closureDownloadSize with -S) as nix path-info prints them', async () => {
    const work = tempDir();
    for (const compression of ['xz', 'none']) {
      const cache = join(work, compression);
      writeVectorCache(cache, compression);
      for (const flags of [[], ['-S'], ['-r']]) {
        const nix = await nixAsync('nix', ['path-info', '--store', `file://${cache}`, '--json', ...flags, DEPENDENT]);
        expect(nix.code, nix.stderr).toBe(0);
        const mine = await runStrata(['--store', `file://${cache}`, '--json', 'path-info', ...flags, DEPENDENT]);
        expect(mine.code, mine.stderr).toBe(0);
        expect(JSON.parse(mine.stdout.toString()), `${compression} ${flags.join(' ')}`).toEqual(JSON.parse(nix.stdout));
        expect(mine.stdout.toString()).toContain('"downloadHash"');
      }
    }
  });

  it('strata serve prints its URL; nix path-info and nix store verify read it', async () => {
    const work = tempDir();
    const { sk } = writeKeys(work);
    const store = await filledStore(work);
    await store.close();
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'strata'), '--store', join(work, 'local'), 'serve', '--listen', '127.0.0.1:0', '--sign-key', sk], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          if (out.includes('\n')) resolve(out.trim());
        });
        child.on('exit', (code) => reject(new Error(`serve exited ${code}`)));
      });
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const pi = await nixAsync('nix', ['path-info', '--store', url, '--json', '-r', DEPENDENT]);
      expect(pi.code, pi.stderr).toBe(0);
      expect((JSON.parse(pi.stdout) as Array<{ path: string }>).map((x) => x.path).sort()).toEqual([DEPENDENT, dir.print(dir.parse('/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple'))].sort());
      const v = await nixAsync('nix', ['store', 'verify', '--store', url, '--trusted-public-keys', PUBLIC_KEY, '-r', DEPENDENT]);
      expect(v.code, v.stderr).toBe(0);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('close', r));
    }
  });
});
