import { spawnSync } from 'node:child_process';
import { appendFileSync, chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { runStrata } from '../support/cli.js';
import { ensureBuilt } from '../support/cli.js';
import { runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

describe('verify --repair', () => {
  it('puts back a modified path from a substituter whose NAR matches, and says when none can', async () => {
    ensureBuilt();
    const work = tempDir();
    const root = join(work, 's');
    const store = (await openStore(root)) as LocalStore;
    const a = await store.addText('a.txt', 'original\n', []);
    const b = await store.addText('b.txt', `uses ${store.storeDir.print(a.path)}\n`, [a.path]);
    await store.close();
    spawnSync('cp', ['-a', root, join(work, 'backup')]);
    const file = join(root, 'nix/store', a.path.baseName);
    chmodSync(file, 0o644);
    appendFileSync(file, 'tampered');
    chmodSync(file, 0o444);

    const without = await runStrata(['--store', root, 'verify', '--check-contents', '--repair']);
    expect(without.code).toBe(1);
    expect(without.stderr).toContain(`path '/nix/store/${a.path.baseName}' was modified!`);
    expect(without.stderr).toContain(`cannot repair path '/nix/store/${a.path.baseName}'`);

    const withSub = await runStrata(['--store', root, 'verify', '--check-contents', '--repair', '--substituter', `${join(work, 'backup')}?read-only=true`]);
    expect(withSub.code, withSub.stderr).toBe(0);
    expect(withSub.stderr.split(`repaired path '/nix/store/${a.path.baseName}'`).length).toBe(2); // once
    expect(without.stderr.split('cannot repair path').length).toBe(2);
    expect(readFileSync(file, 'utf8')).toBe('original\n');
    expect(readFileSync(join(root, 'nix/store', b.path.baseName), 'utf8')).toContain('uses');
    expect((await runStrata(['--store', root, 'verify', '--check-contents'])).code).toBe(0);
    expect(runNix('nix-store', ['--store', root, '--verify', '--check-contents']).code).toBe(0);
  });
});
