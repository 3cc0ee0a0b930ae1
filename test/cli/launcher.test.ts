/**
 * bin/strata, the launcher: it runs a bundle of scripts/bundle.mjs (the command's own, else the
 * full dist/strata.cjs; for `env`, the fresh-cache answer first) through a V8 code cache, or the
 * compiled modules when they are newer than the bundles. The first tests run a copy of
 * bin/strata over a stand-in dist/; the last run the real bundles.
 */
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { GLOBAL_OPTIONS } from '../../src/cli/global.js';
import { openStore } from '../../src/store/open.js';
import { makePackageLower } from '../env/fixtures.js';
import { ensureBuilt, ROOT, runStrata, runStrataListingModules } from '../support/cli.js';
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
    // As scripts/bundle.mjs writes them: wrapped in a CommonJS module's function.
    setBundle: (text, mtime) => {
      writeFileSync(bundle, `(function (exports, require, module, __filename, __dirname, launcher) {${text}\n})`);
      utimesSync(bundle, mtime, mtime);
    },
  };
}

describe('bin/strata', () => {
  it('runs the bundle through a code cache written by the first run', () => {
    const c = fakeCheckout();
    c.setBundle(
      "process.stdout.write('bundle ' + typeof module.exports);\n",
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

/** A `--require` probe recording the files bin/strata compiles with `vm.Script`, in order. */
function scriptProbe(): { env: Record<string, string>; compiled: () => string[] } {
  const dir = tempDir();
  const out = join(dir, 'compiled.json');
  const probe = join(dir, 'probe.cjs');
  writeFileSync(
    probe,
    `const vm = require('vm'); const seen = []; const Script = vm.Script;
vm.Script = function (source, options) { seen.push(options.filename); return new Script(source, options); };
process.on('exit', () => require('fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify(seen)));\n`,
  );
  return {
    env: { NODE_OPTIONS: `--require ${probe}` },
    compiled: () => (JSON.parse(readFileSync(out, 'utf8')) as string[]).map((f) => f.slice(ROOT.length + 1)),
  };
}

/** The same command line through the compiled modules (no bundle, no fast path). */
function viaModules(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [join(ROOT, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8' });
}

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

  it('path-info loads neither child_process nor crypto (lazy built-ins)', async () => {
    const store = tempDir();
    const missing = '/nix/store/00000000000000000000000000000000-missing';
    const { run: r, modules: loaded } = await runStrataListingModules(['--store', store, '--json', 'path-info', missing]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout.toString())).toEqual([{ path: missing, valid: false }]);
    expect(loaded).toContain('NativeModule vm'); // the bundle ran
    expect(loaded).not.toContain('NativeModule child_process');
    expect(loaded).not.toContain('NativeModule crypto');
    rmSync(store, { recursive: true, force: true });
  });

  it("runs a command's own bundle, and hands a command line it cannot take to the full one", async () => {
    const store = tempDir();
    const missing = '/nix/store/00000000000000000000000000000000-missing';
    const probe = scriptProbe();
    const own = await runStrata(['--store', store, '--json', 'path-info', missing], { env: probe.env });
    expect(own.code).toBe(0);
    expect(JSON.parse(own.stdout.toString())).toEqual([{ path: missing, valid: false }]);
    expect(probe.compiled()).toEqual(['dist/bundle/path-info.cjs']);
    // bin/strata guesses `path-info`, but main.ts (commander's view) sees an unknown option
    // first: the full CLI takes over and says what the modules say.
    const odd = await runStrata(['--bogus', 'path-info', missing], { env: probe.env });
    expect(probe.compiled()).toEqual(['dist/bundle/path-info.cjs', 'dist/strata.cjs']);
    const ref = viaModules(['--bogus', 'path-info', missing]);
    expect([odd.code, odd.stdout.toString(), odd.stderr]).toEqual([ref.status, ref.stdout, ref.stderr]);
    expect(odd.stderr).toMatch(/unknown option '--bogus'/);
    // Help lists every command, as the full CLI does.
    const help = await runStrata(['--help']);
    expect(help.stdout.toString()).toBe(viaModules(['--help']).stdout);
    expect(help.stdout.toString()).toMatch(/path-info[\s\S]*serve[\s\S]*shell/);
  });

  it('guesses the command past the value of every global option that takes one', async () => {
    // bin/strata cannot import the option list (it runs before any bundle): its own list of
    // value-taking options must match GLOBAL_OPTIONS, or such command lines lose their bundle.
    const valued = GLOBAL_OPTIONS.filter((o) => /<\w+>/.test(o.flags)).map((o) => o.flags.split(/[ ,]+/).find((f) => f.startsWith('--'))!);
    expect(valued.length).toBeGreaterThan(0);
    for (const flag of valued) {
      const probe = scriptProbe();
      const r = await runStrata([flag, 'path-info', 'hash', '--help'], { env: probe.env });
      expect(r.code, flag).toBe(0);
      expect(probe.compiled(), flag).toEqual(['dist/bundle/hash.cjs']);
    }
  });

  it('answers `strata env` from a fresh cache with the small bundle, exactly as the full CLI would', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    await makePackageLower(root, [{ name: 'hello-2.12', bin: { hello: 'Hello, world!' } }]);
    const spec = join(work, 'replit.nix');
    writeFileSync(spec, '{ pkgs }: {\n  deps = [ pkgs.hello ];\n}\n');
    const probe = scriptProbe();
    const built = await runStrata(['env', spec, '--store', root], { env: probe.env });
    expect(built.code, built.stderr).toBe(0);
    // No cache yet: the fast path declines and the command's own bundle builds it.
    expect(probe.compiled()).toEqual(['dist/bundle/env-fresh.cjs', 'dist/bundle/env.cjs']);
    for (const args of [
      ['env', spec, '--store', root],
      ['--store', root, 'env', spec, '--json'],
      ['--json', '--quiet', `--store=${root}`, 'env', spec],
    ]) {
      const fresh = await runStrata(args, { env: probe.env });
      expect(probe.compiled()).toEqual(['dist/bundle/env-fresh.cjs']);
      const ref = viaModules(args);
      expect(ref.status).toBe(0);
      expect([fresh.code, fresh.stdout.toString(), fresh.stderr]).toEqual([0, ref.stdout, '']);
    }
    // Options the fast path does not know go to the CLI, which reads them.
    const noCache = await runStrata(['env', spec, '--store', root, '--no-cache'], { env: probe.env });
    expect(noCache.code, noCache.stderr).toBe(0);
    expect(probe.compiled()).toEqual(['dist/bundle/env-fresh.cjs', 'dist/bundle/env.cjs']);
    // A stale cache: the CLI says why and rebuilds.
    writeFileSync(spec, '{ pkgs }: {\n  deps = [ pkgs.hello ]; # edited\n}\n');
    const stale = await runStrata(['env', spec, '--store', root], { env: probe.env });
    expect(stale.stderr).toMatch(/^environment cache is stale: replit.nix changed; rebuilding\n/);
    expect(probe.compiled()).toEqual(['dist/bundle/env-fresh.cjs', 'dist/bundle/env.cjs']);
  }, 60_000);

  it('exits once the command is done, yet never before a slow reader has all of its output', async () => {
    // main.ts ends the process itself when a command finishes; a pipe the reader empties late
    // may still hold queued bytes then (path-info writes its answer in one go), and those must
    // not be lost.
    const store = await openStore(join(tempDir(), 's'));
    for (let i = 0; i < 1200; i++) await store.addText(`text-${i}`, `${i}\n`, []);
    await store.close();
    const args = ['--store', store.uri, 'path-info', '--json', '--all'];
    const whole = await runStrata(args);
    expect(whole.stdout.length).toBeGreaterThan(2 * 65536); // more than a pipe holds (64 KiB)
    const r = spawnSync('sh', ['-c', 'node "$@" | { sleep 0.5; cat; }', 'sh', join(ROOT, 'bin', 'strata'), ...args], { maxBuffer: 1 << 24 });
    expect(r.stderr.toString()).toBe('');
    expect(r.stdout.equals(whole.stdout)).toBe(true);
  });

  it('bundles are ASCII (bin/strata reads them as latin1)', () => {
    for (const f of ['strata.cjs', ...readdirSync(join(ROOT, 'dist', 'bundle')).map((b) => `bundle/${b}`)]) {
      const bytes = readFileSync(join(ROOT, 'dist', f));
      expect(bytes.findIndex((b) => b > 0x7f), f).toBe(-1);
    }
  });
});
