import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { addShDrv } from '../build/helpers.js';
import { copyPaths } from '../../src/store/copy.js';
import { initLayered } from '../../src/store/layered/open-layered.js';
import { openStore } from '../../src/store/open.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { isRoot } from '../support/mounts.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { addPackages, makePackageLower, type PackageRecipe, writeIndex } from './fixtures.js';

const LOWER: PackageRecipe[] = [
  {
    name: 'libgreet-1.0',
    files: {
      'lib/libgreet.so': 'ELF greet\n',
      'include/greet.h': '#define GREET 1\n',
      'lib/pkgconfig/greet.pc': 'Name: greet\n',
    },
  },
  {
    name: 'hello-2.12',
    bin: { hello: 'Hello, world!' },
    deps: ['libgreet-1.0'],
    files: { 'share/man/man1/hello.1': '.TH HELLO 1\n' },
  },
  { name: 'gnumake-4.4', bin: { make: 'GNU Make 4.4' } },
];

// A probe loaded with --require: at exit, lists the store-database modules Node loaded.
const PROBE = `process.on('exit', () => { const m = Object.keys(require.cache).filter((k) => k.includes('better-sqlite3') || k.endsWith('database.js')); require('fs').writeFileSync(process.env.PROBE_OUT, JSON.stringify(m)); });\n`;

beforeAll(() => ensureBuilt(), 120_000);

describe('strata env on a plain local store', () => {
  it("prints export lines from the store's own package index, and names unknown packages and invalid paths by file:line:col", async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const lower = await makePackageLower(root, LOWER);
    const spec = join(work, 'replit.nix');
    writeFileSync(spec, '{ pkgs }: {\n  deps = [ pkgs.hello pkgs.gnumake pkgs.libgreet ];\n}\n');
    const r = await runStrata(['env', spec, '--store', root]);
    expect(r.stderr).toMatch(/^environment: 3 deps, closure 4 paths \(\d/);
    expect(r.code).toBe(0);
    const out = r.stdout.toString();
    const profile = /export STRATA_ENV=(\/nix\/store\/[a-z0-9]{32}-strata-env)/.exec(out)?.[1];
    expect(profile).toBeDefined();
    expect(out).toContain(`export PATH=${profile}/bin"\${PATH:+:$PATH}"\n`);
    expect(out).toContain(`export MANPATH=${profile}/share/man:"\${MANPATH:-}"\n`);
    expect(out).toContain(
      `export PKG_CONFIG_PATH=${profile}/lib/pkgconfig"\${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"\n`,
    );
    expect(out).toContain(`export CPATH=${profile}/include`);
    // The printed lines are valid shell.
    const sh = runNix('sh', ['-c', `PATH=/usr/bin:/bin; ${out} echo "$PATH"`]);
    expect(sh.stdout.trim()).toBe(`${profile}/bin:/usr/bin:/bin`);

    writeFileSync(spec, '{ pkgs }: {\n  deps = [ pkgs.hello pkgs.gnumak ];\n}\n');
    const bad = await runStrata(['env', spec, '--store', root, '--no-cache']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe(
      `error: ${spec}:2:23: Unknown package 'pkgs.gnumak': no package index has it (looked in store); did you mean 'pkgs.gnumake'?\n`,
    );

    const missing = '/nix/store/0123456789abcdfghijklmnpqrsvwxyz-not-here';
    writeFileSync(join(work, 'strata.json'), JSON.stringify({ deps: ['hello', missing] }));
    const gone = await runStrata(['env', join(work, 'strata.json'), '--store', root, '--no-cache']);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toBe(
      `error: ${join(work, 'strata.json')}:1:18: Cannot use '${missing}': it is not valid in any layer of '${root}'\n`,
    );

    writeFileSync(join(work, 'strata.toml'), 'deps = [\n  "hello",\n]\nname = "x"\n');
    const toml = await runStrata(['env', join(work, 'strata.toml'), '--store', root, '--no-cache']);
    expect(toml.stderr).toBe(
      `error: ${join(work, 'strata.toml')}:4:1: Key 'name' is not supported: a spec has only 'deps'\n`,
    );
    expect(lower.paths.size).toBe(3);
  });
});

/** A local store holding LOWER's packages, and a replit.nix beside it that asks for hello. */
async function helloSpec(): Promise<{ work: string; root: string; spec: string }> {
  const work = tempDir();
  const root = join(work, 'store');
  await makePackageLower(root, LOWER);
  const spec = join(work, 'replit.nix');
  writeFileSync(spec, '{ pkgs }: {\n  deps = [ pkgs.hello ];\n}\n');
  return { work, root, spec };
}

describe.runIf(isRoot)('strata shell SPEC CMD ARGS…', () => {
  it('passes everything after the spec to the command, options included, with or without --', async () => {
    const { root, spec } = await helloSpec();
    const args = ['-l', '--json', '-v', '--no-cache', '--store', 'x', '--', '--help'];
    const bare = await runStrata(['shell', '--store', root, spec, 'sh', '-c', 'hello; echo "$*"', 'sh', ...args]);
    expect(bare.stderr).not.toMatch(/error/);
    expect(bare.stdout.toString()).toBe(`Hello, world!\n${args.join(' ')}\n`);
    expect(bare.code).toBe(0);
    const dashed = await runStrata(['shell', '--store', root, spec, '--', 'sh', '-c', 'echo "$*"', 'sh', ...args]);
    expect(dashed.stdout.toString()).toBe(`${args.join(' ')}\n`);
    expect(dashed.code).toBe(0);
  });
});

describe.runIf(haveNix)('the profile\'s GC root', () => {
  it('is the indirect root real Nix makes for the same link (gcroots/auto/<nix32 of sha1>)', async () => {
    const { work, root, spec } = await helloSpec();
    const r = await runStrata(['env', spec, '--store', root]);
    expect(r.code, r.stderr).toBe(0);
    const profile = /export STRATA_ENV=(\S+)/.exec(r.stdout.toString())![1]!;
    const auto = join(root, 'nix/var/nix/gcroots/auto');
    const ours = readdirSync(auto);
    expect(ours).toHaveLength(1);
    // Nix names the root of a link after the link: registering the same link adds no second root.
    const link = join(work, '.cache/strata/profile');
    const n = runNix('nix-store', ['--store', root, '--add-root', link, '--indirect', '-r', profile]);
    expect(n.code, n.stderr).toBe(0);
    expect(readdirSync(auto)).toEqual(ours);
  });
});

describe.runIf(isRoot)('strata env over local-overlay://', () => {
  it('answers the second run from the cache although the lower is opened read-write', async () => {
    const work = tempDir();
    const lower = join(work, 'lower');
    await makePackageLower(lower, LOWER);
    // No published generation (a lower real Nix made): its DB file is the fingerprint.
    rmSync(join(lower, 'nix/var/nix/strata-generation'));
    for (const d of ['upper', 'work', 'merged/nix/store']) mkdirSync(join(work, d), { recursive: true });
    const m = runNix('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower}/nix/store,upperdir=${work}/upper,workdir=${work}/work`, `${work}/merged/nix/store`]);
    expect(m.code, m.stderr).toBe(0);
    const uri = `local-overlay://?root=${work}/merged&lower-store=${lower}&upper-layer=${work}/upper`;
    const spec = join(work, 'replit.nix');
    writeFileSync(spec, '{ pkgs }: {\n  deps = [ pkgs.hello ];\n}\n');
    const first = await runStrata(['env', spec, '--store', uri]);
    expect(first.code, first.stderr).toBe(0);
    const second = await runStrata(['env', spec, '--store', uri]);
    expect(second.stderr).toBe('');
    expect(second.stdout.toString()).toBe(first.stdout.toString());
  });
});

describe.runIf(isRoot)('strata env and strata shell over a layered store (real overlayfs)', () => {
  it('runs lower, upper, built and substituted packages, caches, notices staleness and answers from a fresh cache without the store', async () => {
    const work = tempDir();
    const lowerRoot = join(work, 'lower');
    await makePackageLower(lowerRoot, LOWER, 'disk-1');
    // A package only a binary cache has: substituted when the environment is made.
    const cacheDir = join(work, 'cache');
    const source = await openStore(join(work, 'cache-source'));
    const cache = await openStore(`file://${cacheDir}?compression=none`);
    let fetched: string;
    try {
      const p = (
        await addPackages(source, [
          { name: 'fetched-3.1', bin: { fetched: 'fetched from a cache' } },
        ])
      ).get('fetched-3.1')!;
      await copyPaths(source, cache, [p]);
      fetched = source.storeDir.print(p);
    } finally {
      await source.close();
      await cache.close();
    }
    const dir = join(work, 'layered');
    const uri = `layered://${dir}`;
    const store = await initLayered(dir, [lowerRoot], { substituters: [`file://${cacheDir}`] });
    let drv: string;
    try {
      // A package of the user's own, in the upper, published in the upper's index.
      const mine = await addPackages(store, [
        { name: 'mytool-0.1', bin: { mytool: 'my own tool' } },
      ]);
      writeIndex(join(dir, 'nix', 'var', 'nix', 'strata-packages.json'), {
        mytool: store.storeDir.print(mine.get('mytool-0.1')!),
      });
      // And one that no layer has yet: a derivation, built when the environment is made.
      const drvPath = await addShDrv(
        store,
        'built-tool',
        '/bin/mkdir -p $out/bin && printf "#!/bin/sh\\necho built here\\n" > $out/bin/built-tool && /bin/chmod +x $out/bin/built-tool',
      );
      drv = store.storeDir.print(drvPath);
    } finally {
      await store.close();
    }
    const project = join(work, 'project');
    mkdirSync(project);
    const spec = join(project, 'replit.nix');
    writeFileSync(
      spec,
      `{ pkgs }: {\n  deps = [ pkgs.hello pkgs.mytool "${drv}" "${fetched}" ];\n}\n`,
    );
    const env = { STRATA_STORE: uri };

    const first = await runStrata(['env', spec, '--json'], { env });
    expect(first.code, first.stderr).toBe(0);
    const built = JSON.parse(first.stdout.toString());
    expect(built.source).toBe('built');
    expect(built.stats.copiedUp).toBeGreaterThanOrEqual(2); // hello and libgreet, rows only
    expect(built.stats.profileAdded).toBe(true);
    expect(built.stats.substituted).toBe(1);
    expect(built.packages.map((p: string) => p.replace(/^.*?-/, ''))).toEqual([
      'hello-2.12',
      'mytool-0.1',
      'built-tool',
      'fetched-3.1',
    ]);
    expect(readdirNames(join(dir, 'upper'))).not.toContain(
      built.packages[0].slice('/nix/store/'.length),
    ); // no byte of hello in the upper
    expect(existsSync(join(project, '.cache', 'strata', 'env.json'))).toBe(true);

    const shell = await runStrata(
      ['shell', spec, '--', 'sh', '-c', 'hello; mytool; built-tool; fetched; echo "$STRATA_ENV"'],
      { env },
    );
    expect(shell.stderr).toBe('');
    expect(shell.stdout.toString()).toBe(
      `Hello, world!\nmy own tool\nbuilt here\nfetched from a cache\n${built.profile}\n`,
    );
    expect(shell.code).toBe(0);
    const exit = await runStrata(['shell', spec, '--', 'sh', '-c', 'exit 7'], { env });
    expect(exit.code).toBe(7);

    // Fresh: the same answer, nothing said, and no store database module loaded.
    const probe = join(work, 'probe.cjs');
    writeFileSync(probe, PROBE);
    const probeOut = join(work, 'probe.json');
    const fresh = await runStrata(['env', spec, '--json'], {
      env: { ...env, NODE_OPTIONS: `--require ${probe}`, PROBE_OUT: probeOut },
    });
    expect(fresh.stderr).toBe('');
    const cached = JSON.parse(fresh.stdout.toString());
    expect(cached.source).toBe('cache');
    expect(cached.variables).toEqual(built.variables);
    expect(JSON.parse(readFileSync(probeOut, 'utf8'))).toEqual([]);

    // Fresh with the database made unusable: still answered (it is never opened).
    const db = join(dir, 'nix', 'var', 'nix', 'db');
    renameSync(db, `${db}.away`);
    mkdirSync(db);
    writeFileSync(join(db, 'db.sqlite'), 'this is not a database');
    const noDb = await runStrata(['env', spec], { env });
    expect(noDb.code, noDb.stderr).toBe(0);
    expect(noDb.stdout.toString()).toContain(`export STRATA_ENV=${built.profile}`);
    rmSync(db, { recursive: true });
    renameSync(`${db}.away`, db);

    // Stale after a spec edit: rebuilt (the store is opened: the probe sees SQLite), and says why.
    writeFileSync(
      spec,
      `{ pkgs }: {\n  deps = [ pkgs.hello pkgs.mytool "${drv}" "${fetched}" pkgs.gnumake ];\n}\n`,
    );
    const edited = await runStrata(['env', spec, '--json'], {
      env: { ...env, NODE_OPTIONS: `--require ${probe}`, PROBE_OUT: probeOut },
    });
    expect(edited.code, edited.stderr).toBe(0);
    expect(edited.stderr).toMatch(/^environment cache is stale: replit.nix changed; rebuilding\n/);
    expect(JSON.parse(edited.stdout.toString()).source).toBe('built');
    expect(
      JSON.parse(readFileSync(probeOut, 'utf8')).some((m: string) => m.includes('better-sqlite3')),
    ).toBe(true);
    const make = await runStrata(['shell', spec, '--', 'make'], { env });
    expect(make.stdout.toString()).toBe('GNU Make 4.4\n');

    // Stale after the lower ships a new generation.
    writeFileSync(join(lowerRoot, 'nix', 'var', 'nix', 'strata-generation'), 'disk-2\n');
    const regen = await runStrata(['env', spec], { env });
    expect(regen.code, regen.stderr).toBe(0);
    expect(regen.stderr).toMatch(
      /^environment cache is stale: lower lower0 changed generation \(disk-1 → disk-2\); rebuilding\n/,
    );
    const after = await runStrata(['env', spec], { env });
    expect(after.stderr).toBe('');

    // Stale after a package index changes.
    const upperIndex = join(dir, 'nix', 'var', 'nix', 'strata-packages.json');
    writeFileSync(upperIndex, `${readFileSync(upperIndex, 'utf8')} `);
    const reindexed = await runStrata(['env', spec], { env });
    expect(reindexed.stderr).toMatch(
      /^environment cache is stale: package index '.*strata-packages.json' changed; rebuilding\n/,
    );

    // The merged store, profile included, is what real Nix expects.
    if (haveNix()) {
      const verify = runNix('nix-store', ['--store', dir, '--verify', '--check-contents']);
      expect(verify.code, verify.stderr).toBe(0);
    }
  });
});

function readdirNames(d: string): string[] {
  return existsSync(d) ? readdirSync(d) : [];
}
