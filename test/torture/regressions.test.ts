/**
 * Regression cases for the defects the torture suite found, one per defect, kept small and
 * deterministic (the fuzzers that found them use random inputs).
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { describe, expect, it } from 'vitest';

import { parseDerivation } from '../../src/core/derivation/aterm.js';
import { StrataError } from '../../src/core/error.js';
import { Hash } from '../../src/core/hash.js';
import { encodeNar } from '../../src/core/nar/writer.js';
import { StoreDir } from '../../src/core/store-path.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { parseStoreUri } from '../../src/store/uri.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

function thrown(fn: () => unknown): StrataError {
  try {
    fn();
  } catch (e) {
    if (e instanceof StrataError) return e;
    throw e;
  }
  throw new Error('did not throw');
}

describe('torture regressions', () => {
  // Found by fuzz-text: a newline in a quoted value split the error over two lines.
  it('StrataError messages stay on one line when the quoted input holds newlines or control characters', () => {
    const e = thrown(() => parseStoreUri('\n\0local'));
    expect(e.code).toBe('URI_INVALID');
    expect(e.message).toBe(
      "Cannot use store URI '\\n\\x00local': unknown form (expected /abs/dir, local, file://, http(s)://, s3://, local-overlay:// or layered://)",
    );
    const d = thrown(() =>
      parseDerivation(new StoreDir(), 'Derive([("out","","\n","")],[],[],"","",[],[])'),
    );
    expect(d.code).toBe('DRV_INVALID');
    expect(d.message).not.toMatch(/[\n\r]/);
    expect(new StrataError('X', 'a\r\nb', { hint: 'c\nd' }).hint).toBe('c\\nd');
  });

  it('the CLI prints exactly one error line for a store URI with a newline in it', async () => {
    ensureBuilt();
    const r = await runStrata(['--store', 'file://\nrm -rf /', 'path-info', '--all']);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n').filter((l) => l !== '')).toHaveLength(1);
  });

  // Found by fuzz-text: '//' stripped to '' and opened a store relative to the working directory.
  it("parseStoreUri keeps '/' for roots made only of slashes", () => {
    expect(parseStoreUri('//')).toMatchObject({ scheme: 'local', root: '/' });
    expect(parseStoreUri('local-overlay:////')).toMatchObject({ root: '/' });
    expect(parseStoreUri('file:////')).toMatchObject({ scheme: 'file', path: '/' });
    expect(parseStoreUri('/tmp/x//')).toMatchObject({ root: '/tmp/x' });
  });

  // Found by hostile.test.ts: `local?root=relative` opened (and created) a store under the cwd.
  it('parseStoreUri refuses relative directories in local-store parameters', () => {
    for (const u of [
      'local?root=relative',
      'local?state=x',
      '/tmp/s?real=.',
      'local-overlay://?root=/m&upper-layer=u',
      'local?log=',
    ])
      expect(thrown(() => parseStoreUri(u)).code, u).toBe('URI_INVALID');
    expect(parseStoreUri('local?root=/tmp/x&state=/tmp/y')).toMatchObject({ scheme: 'local' });
  });

  // Found by hostile.test.ts: a `.drv` arriving as a NAR (copy, substitution) was registered
  // without checking its output paths, so a cache could make a build write any path.
  it('addFromNar refuses a .drv whose output paths do not match its contents, and registers nothing', async () => {
    const root = tempDir();
    const store = (await openStore(root)) as LocalStore;
    try {
      const text =
        'Derive([("out","/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo hi > $out"],[("builder","/bin/sh"),("name","simple"),("out","/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple"),("system","x86_64-linux")])';
      const chunks: Buffer[] = [];
      for await (const c of encodeNar({
        type: 'regular',
        executable: false,
        size: text.length,
        contents: [Buffer.from(text)],
      }))
        chunks.push(Buffer.from(c));
      const nar = Buffer.concat(chunks);
      const path = store.storeDir.parse('/nix/store/3ghsl9sd83mc26i81adpa2fzf3yw4f68-simple.drv');
      const info = {
        path,
        narHash: Hash.of('sha256', nar),
        narSize: nar.length,
        references: [],
        ultimate: false,
        sigs: [],
      };
      await expect(store.addFromNar(info, Readable.from([nar]))).rejects.toMatchObject({
        code: 'DRV_OUTPUT_MISMATCH',
      });
      expect(await store.isValidPath(path)).toBe(false);
      expect(readdirSync(join(root, 'nix', 'store'))).toEqual([]);
    } finally {
      await store.close();
    }
  });

  // Found by concurrency.test.ts: in a layered store outputs are copied (EXDEV) out of the shared
  // build upper, and the copy was left there, so the next build of the same run was refused.
  it.runIf(process.getuid?.() === 0)(
    'a layered store builds a dependent chain in one realise run',
    async () => {
      ensureBuilt();
      const work = tempDir();
      const { makeLower } = await import('../support/layered.js');
      const { initLayered } = await import('../../src/store/layered/open-layered.js');
      const { addShDrv } = await import('../build/helpers.js');
      const lower = await makeLower(join(work, 'lower'));
      const root = join(work, 'layered');
      const store = await initLayered(root, [lower.root]);
      let top;
      try {
        const a = await addShDrv(store, 'chain-a', 'echo a > $out');
        const b = await addShDrv(store, 'chain-b', 'echo b > $out', {
          inputDrvs: new Map([[a.baseName, ['out']]]),
        });
        top = await addShDrv(store, 'chain-c', 'echo c > $out', {
          inputDrvs: new Map([[b.baseName, ['out']]]),
        });
      } finally {
        await store.close();
      }
      const r = await runStrata([
        '--store',
        `layered://${root}`,
        'realise',
        '-j',
        '2',
        `/nix/store/${top.baseName}`,
      ]);
      expect(r.code, r.stderr).toBe(0);
    },
  );

  // Found by concurrency.test.ts: copy -r relied on references already valid in the destination
  // without protecting them, so a GC beside it could delete one before the referrer was registered.
  it('copyPaths makes the paths it finds valid in the destination temp roots before relying on them', async () => {
    const { copyPaths } = await import('../../src/store/copy.js');
    const { readFileSync } = await import('node:fs');
    const work = tempDir();
    const src = (await openStore(join(work, 'src'))) as LocalStore;
    const dst = (await openStore(join(work, 'dst'))) as LocalStore;
    try {
      const leaf = (await src.addText('leaf', 'leaf\n', [])).path;
      const top = (await src.addText('top', `uses ${src.storeDir.print(leaf)}\n`, [leaf])).path;
      await copyPaths(src, dst, [leaf]);
      // A fresh process view of the destination: no temp roots yet.
      await dst.close();
      const dst2 = (await openStore(join(work, 'dst'))) as LocalStore;
      try {
        await copyPaths(src, dst2, [leaf, top], { recursive: true });
        const roots = readFileSync(
          join(work, 'dst', 'nix', 'var', 'nix', 'temproots', String(process.pid)),
          'utf8',
        );
        expect(roots.split('\0')).toContain(dst2.storeDir.print(leaf));
      } finally {
        await dst2.close();
      }
    } finally {
      await src.close();
    }
  });
});
