/** The substituter hook: asked for missing outputs before building; what it provides is not built. */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { realiseOrThrow } from '../../src/build/index.js';
import { Hash } from '../../src/core/hash.js';
import type { StorePath } from '../../src/core/store-path.js';
import { tempDir } from '../support/tmp.js';
import { addShDrv, openChroot } from './helpers.js';

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('realise: substitution hook', () => {
  it('a substituter that provides the output keeps the builder from running', async () => {
    const store = await openChroot(tempDir());
    try {
      const marker = join(tempDir(), 'built');
      const content = 'fixed content\n';
      const drv = await addShDrv(
        store,
        'fixed-flat.txt',
        `echo > ${marker}; printf 'fixed content\\n' > $out`,
        {
          fixed: { hashAlgo: 'sha256', hash: Hash.of('sha256', content).toBase16() },
        },
      );
      const asked: string[] = [];
      const [outs] = await realiseOrThrow(store, [drv], {
        substitute: async (paths: StorePath[]) => {
          asked.push(...paths.map((p) => p.baseName));
          const file = join(tempDir(), 'f');
          writeFileSync(file, content);
          const info = await store.addPath(file, { name: 'fixed-flat.txt', method: 'flat' });
          return [info.path];
        },
      });
      const out = outs!.get('out')!;
      expect(asked).toEqual([out.baseName]);
      expect(await store.isValidPath(out)).toBe(true);
      expect(existsSync(marker)).toBe(false);
      // The vector's path for the same fixed output.
      expect(out.baseName).toBe('j50dpv4dm8hhhp1acbzyg52c6hm45l3w-fixed-flat.txt');
    } finally {
      await store.close();
    }
  });
});
