/**
 * bin/strata, the launcher: it runs dist/strata.cjs (the bundle of scripts/bundle.mjs) through a
 * V8 code cache, or the compiled modules when they are newer than the bundle. The first tests
 * run a copy of bin/strata over a stand-in dist/; the last runs the real bundle.
 */
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { ensureBuilt, ROOT } from '../support/cli.js';
import { tempDir } from '../support/tmp.js';

/** A checkout with bin/strata and a dist/ whose bundle and modules say who they are. */
function fakeCheckout(): {
  root: string;
  run: (...args: string[]) => string;
  setBundle: (text: string, mtime: number) => void;
} {
  const root = tempDir();
  mkdirSync(join(root, 'bin'));
  for (const f of ['strata', 'package.json'])
    copyFileSync(join(ROOT, 'bin', f), join(root, 'bin', f));
  writeFileSync(join(root, 'package.json'), '{ "type": "module" }\n');
  mkdirSync(join(root, 'dist', 'cli'), { recursive: true });
  writeFileSync(join(root, 'dist', 'cli', 'main.js'), "process.stdout.write('modules');\n");
  utimesSync(join(root, 'dist', 'cli', 'main.js'), 1000, 1000);
  const bundle = join(root, 'dist', 'strata.cjs');
  return {
    root,
    run: (...args) => {
      const r = spawnSync(process.execPath, [join(root, 'bin', 'strata'), ...args], {
        encoding: 'utf8',
      });
      expect(r.stderr).toBe('');
      return r.stdout;
    },
    setBundle: (text, mtime) => {
      writeFileSync(bundle, text);
      utimesSync(bundle, mtime, mtime);
    },
  };
}

describe('bin/strata', () => {
  it('runs the bundle through a code cache written by the first run', () => {
    const c = fakeCheckout();
    c.setBundle(
      "#!/usr/bin/env node\nprocess.stdout.write('bundle ' + typeof module.exports);\n",
      2000,
    );
    expect(c.run()).toBe('bundle object');
    const caches = readdirSync(join(c.root, 'dist', '.v8-cache'));
    expect(caches).toHaveLength(1);
    expect(statSync(join(c.root, 'dist', '.v8-cache', caches[0]!)).size).toBeGreaterThan(0);
    expect(c.run()).toBe('bundle object');
    // One cache per command (guessed from argv): each holds what its own first run compiled.
    expect(c.run('--store', '/some/store', 'path-info', '/nix/store/x')).toBe('bundle object');
    expect(readdirSync(join(c.root, 'dist', '.v8-cache')).sort()).toEqual(
      [caches[0]!, caches[0]!.replace(/-other$/, '-path-info')].sort(),
    );
  });

  it('never runs a new bundle with the code cache of an old one of the same length', () => {
    const c = fakeCheckout();
    c.setBundle("process.stdout.write('old');\n", 2000);
    expect(c.run()).toBe('old');
    // V8 checks only a source's length against a cache: the cache is per bundle (size and mtime).
    c.setBundle("process.stdout.write('new');\n", 3000);
    expect(c.run()).toBe('new');
  });

  it('runs the compiled modules when tsc wrote them after the bundle, or there is no bundle', () => {
    const c = fakeCheckout();
    expect(c.run()).toBe('modules');
    c.setBundle("process.stdout.write('bundle');\n", 500);
    expect(c.run()).toBe('modules');
    expect(existsSync(join(c.root, 'dist', '.v8-cache'))).toBe(false);
  });
});

describe('the real bundle', () => {
  beforeAll(() => {
    ensureBuilt();
    const bundle = join(ROOT, 'dist', 'strata.cjs');
    const main = join(ROOT, 'dist', 'cli', 'main.js');
    if (!existsSync(bundle) || statSync(bundle).mtimeMs < statSync(main).mtimeMs) {
      const r = spawnSync(process.execPath, [join(ROOT, 'scripts', 'bundle.mjs')], {
        encoding: 'utf8',
      });
      if (r.status !== 0) throw new Error(`scripts/bundle.mjs failed: ${r.stderr}`);
    }
  }, 120_000);

  it('path-info loads neither child_process nor crypto (lazy built-ins)', () => {
    const store = tempDir();
    const report = join(tempDir(), 'modules.cjs');
    writeFileSync(
      report,
      "process.on('exit', () => process.stderr.write(JSON.stringify(process.moduleLoadList)));\n",
    );
    const missing = '/nix/store/00000000000000000000000000000000-missing';
    const r = spawnSync(
      process.execPath,
      ['-r', report, join(ROOT, 'bin', 'strata'), '--store', store, '--json', 'path-info', missing],
      { encoding: 'utf8' },
    );
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([{ path: missing, valid: false }]);
    const loaded = JSON.parse(r.stderr) as string[];
    expect(loaded).toContain('NativeModule vm'); // the bundle ran
    expect(loaded).not.toContain('NativeModule child_process');
    expect(loaded).not.toContain('NativeModule crypto');
    rmSync(store, { recursive: true, force: true });
  });
});
