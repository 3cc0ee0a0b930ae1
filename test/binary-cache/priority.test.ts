import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { StoreDir } from '../../src/core/store-path.js';
import { openStore } from '../../src/store/open.js';
import { substitutePaths } from '../../src/store/substitute.js';
import { haveNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { nixAsync } from '../serve/_serve.js';
import { narinfosOf, writeVectorCache } from './_cache.js';

const dir = new StoreDir();
const SIMPLE = '/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple';

describe('substituter priority', () => {
  it('a cache whose nix-cache-info names no Priority (as nix copy writes it) has priority 0, ahead of Priority: 40, as in Nix 2.8', async () => {
    const work = tempDir();
    // Listed first, Priority 40, unsigned; listed second, no Priority line, signed: the row's
    // signatures tell which one the path came from.
    const a = join(work, 'a');
    writeVectorCache(a, 'xz', (text) => text.replace(/^Sig: .*\n/gm, ''));
    appendFileSync(join(a, 'nix-cache-info'), 'Priority: 40\n');
    const b = join(work, 'b');
    writeVectorCache(b, 'zstd');
    expect(readFileSync(join(b, 'nix-cache-info'), 'utf8')).not.toContain('Priority');
    const sigs = narinfosOf('zstd').find((n) => n.text.startsWith(`StorePath: ${SIMPLE}\n`))!.text.match(/^Sig: (.*)$/gm)!.map((l) => l.slice(5));

    process.env['XDG_CACHE_HOME'] = join(work, 'xdg');
    const ca = await openStore(`file://${a}`);
    const cb = await openStore(`file://${b}`);
    const local = await openStore(join(work, 'local'));
    try {
      const r = await substitutePaths(local, [ca, cb], [dir.parse(SIMPLE)], { requireSigs: false });
      expect(r.substituted.map((p) => p.name)).toEqual(['simple']);
      expect((await local.queryPathInfo(dir.parse(SIMPLE)))?.sigs).toEqual(sigs);
    } finally {
      for (const s of [ca, cb, local]) await s.close();
    }

    if (haveNix()) {
      const nixStore = join(work, 'nix');
      const r = await nixAsync('nix-store', ['--store', nixStore, '-r', SIMPLE, '--option', 'substituters', `file://${a} file://${b}`, '--option', 'require-sigs', 'false']);
      expect(r.code).toBe(0);
      expect(r.stderr).toContain(`from 'file://${b}'`);
      const info = await nixAsync('nix', ['path-info', '--store', nixStore, '--json', SIMPLE]);
      expect((JSON.parse(info.stdout) as Array<{ signatures?: string[] }>)[0]!.signatures).toEqual(sigs);
    }
  });
});
