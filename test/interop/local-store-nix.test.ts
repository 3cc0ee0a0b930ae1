/**
 * The local store against real Nix 2.8: what strata writes, Nix reads and verifies; what Nix
 * writes, strata reads with the same answers; the same derivation JSON gives the same `.drv`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { openStore } from '../../src/store/open.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { strataOk } from '../support/cli.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { loadVector } from '../support/vectors.js';
import { buildTree } from '../support/tree.js';

const nar = loadVector('nar.json');
const drvs = loadVector('derivations.json');

beforeAll(() => {
  if (!haveNix()) throw new Error('real Nix 2.8 (nix-bin) is required: run scripts/setup.sh');
});

function sortByPath(a: { path: string }[]): { path: string }[] {
  return [...a].sort((x, y) => (x.path < y.path ? -1 : 1));
}

/** Writes the vectors' Nix expression and data file into a fresh directory. */
function nixSource(): string {
  const dir = tempDir('strata-nixsrc-');
  writeFileSync(join(dir, 'default.nix'), drvs.nix_source);
  for (const [name, text] of Object.entries(drvs.extra_files as Record<string, string>)) writeFileSync(join(dir, name), text);
  return dir;
}

describe('a store written by strata, read by real Nix', () => {
  it('passes nix-store --verify --check-contents and nix path-info agrees on every field', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    for (const c of nar.cases.slice(0, 4)) {
      buildTree(join(work, c.name), c.root);
      await strataOk(['--store', root, 'add', join(work, c.name)]);
    }
    const store = (await openStore(root)) as LocalStore;
    try {
      const a = await store.addText('a.txt', 'A', []);
      await store.addText('b.txt', 'refers to /nix/store/l82nr4gna33sc2g8m4hkkr6r983dlbd6-a.txt\n', [a.path]);
    } finally {
      await store.close();
    }
    // Derivations too, with their DerivationOutputs rows.
    for (const attr of ['simple', 'dependent']) {
      const c = drvs.cases.find((x: { attr: string }) => x.attr === attr);
      expect((await strataOk(['--store', root, 'derivation', 'add'], { input: JSON.stringify(c.show_derivation) })).trim()).toBe(c.drv_path);
    }
    const verify = runNix('nix-store', ['--store', root, '--verify', '--check-contents']);
    expect(verify.stderr).not.toMatch(/error|modified/);
    expect(verify.code).toBe(0);
    const theirs = JSON.parse(runNix('nix', ['path-info', '--store', root, '--json', '--all']).stdout);
    const ours = JSON.parse(await strataOk(['--store', root, '--json', 'path-info', '--all']));
    expect(ours.length).toBe(8);
    expect(sortByPath(ours)).toEqual(sortByPath(theirs));
    // Same keys in the same order, as scripts may compare the text.
    expect(sortByPath(ours).map((o) => Object.keys(o).join(','))).toEqual(sortByPath(theirs).map((o) => Object.keys(o).join(',')));
    const outputs = runNix('nix-store', ['--store', root, '-q', '--outputs', drvs.cases[1].drv_path]);
    expect(outputs.stdout.trim()).toBe(drvs.cases[1].show_derivation.outputs.out.path);
  });
});

describe('a store written by real Nix, read by strata', () => {
  it('gives the same answers to every query', { timeout: 180_000 }, async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const src = nixSource();
    buildTree(join(work, 'tree1'), nar.cases[0].root);
    expect(runNix('nix-store', ['--store', root, '--add', join(work, 'tree1')]).code).toBe(0);
    const build = runNix('nix-build', ['--store', root, '--option', 'sandbox', 'true', '--option', 'sandbox-paths', '/bin /lib /lib64 /usr', '--no-out-link', join(src, 'default.nix'), '-A', 'refs', '-A', 'useDev', '-A', 'withSrcs', '-A', 'chain3']);
    expect(build.stderr).not.toMatch(/^error/m);
    expect(build.code).toBe(0);
    runNix('nix-instantiate', ['--store', root, join(src, 'default.nix'), '-A', 'envEscapes', '-A', 'argsEscape']);

    const theirs = JSON.parse(runNix('nix', ['path-info', '--store', root, '--json', '--all']).stdout) as { path: string }[];
    const ours = JSON.parse(await strataOk(['--store', root, '--json', 'path-info', '--all'])) as { path: string }[];
    expect(ours.length).toBeGreaterThan(20);
    expect(sortByPath(ours)).toEqual(sortByPath(theirs));

    // Each query in-process (a CLI spawn per query would cost the suite a minute); the CLI's own
    // rendering of these queries is checked on one path below.
    const store = (await openStore(`${root}?read-only=true`)) as LocalStore;
    const dir = store.storeDir;
    const lines = (paths: { baseName: string }[]) => paths.map((p) => `${dir.path}/${p.baseName}`).sort();
    try {
      // References and derivers are fields of Nix's path-info JSON (compared whole above); the
      // referrers are its references inverted. Only the .drv queries need more Nix calls.
      const nixReferrers = new Map<string, string[]>();
      for (const i of theirs as { path: string; references: string[] }[]) for (const r of i.references) nixReferrers.set(r, [...(nixReferrers.get(r) ?? []), i.path]);
      for (const { path } of theirs) {
        const p = dir.parse(path);
        expect(lines(await store.queryReferrers(p)), path).toEqual((nixReferrers.get(path) ?? []).sort());
        if (path.endsWith('.drv')) {
          const nixOutputs = runNix('nix-store', ['--store', root, '-q', '--outputs', path]).stdout.trim().split('\n').filter(Boolean).sort();
          expect(lines([...(await store.queryDerivationOutputs(p)).values()])).toEqual(nixOutputs);
          const shown = JSON.parse(runNix('nix', ['show-derivation', '--store', root, path]).stdout);
          const { derivationToJson } = await import('../../src/core/derivation/index.js');
          const { readDerivation } = await import('../../src/store/derivation-add.js');
          expect({ [path]: derivationToJson(dir, await readDerivation(store, p)) }).toEqual(shown);
        }
      }
    } finally {
      await store.close();
    }
    const drvPath = theirs.find((p) => p.path.endsWith('-use-dev.drv'))!.path;
    // Byte for byte: Nix's indentation, its \u00XX escapes (no \b or \f), each path once, in path order.
    const weird = JSON.parse(await strataOk(['--store', root, 'derivation', 'show', drvPath]))[drvPath];
    weird.env.ctl = 'a\u0001b\bc\fd\t"q" \\b é ✓';
    delete weird.env.out;
    weird.outputs = { out: {} };
    const weirdPath = (await strataOk(['--store', root, 'derivation', 'add'], { input: JSON.stringify(weird) })).trim();
    for (const args of [[drvPath], [weirdPath, drvPath, weirdPath]]) {
      expect(await strataOk(['--store', root, 'derivation', 'show', ...args])).toBe(runNix('nix', ['show-derivation', '--store', root, ...args]).stdout);
    }
    for (const q of ['--references', '--referrers', '--deriver', '--outputs']) {
      const n = runNix('nix-store', ['--store', root, '-q', q, drvPath]).stdout;
      expect(await strataOk(['--store', root, 'query', q, drvPath]), q).toBe(n);
    }
    const top = theirs.find((p) => p.path.endsWith('-chain-3'))!.path;
    const n = runNix('nix-store', ['--store', root, '-q', '--requisites', top]).stdout.trim().split('\n').sort();
    const s = (await strataOk(['--store', root, 'query', '--requisites', top])).trim().split('\n').sort();
    expect(s).toEqual(n);
  });
});

describe('derivation add gives the .drv real Nix writes', () => {
  it('for every derivation of the vectors', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const src = nixSource();
    const store = (await openStore(root)) as LocalStore;
    try {
      // The sources the expressions use: the path literal and the builtins.toFile script.
      const data = await store.addPath(join(src, 'data.txt'));
      expect(store.storeDir.print(data.path)).toMatch(/-data\.txt$/);
      await store.addText('builder.sh', 'read x < $src; echo "$x" > $out\n', []);
    } finally {
      await store.close();
    }
    const pending = [...drvs.cases];
    let guard = 0;
    while (pending.length > 0 && guard++ < 100) {
      const c = pending.shift();
      const body = c.show_derivation;
      const ready = Object.keys(body.inputDrvs).every((d) => !pending.some((p: { drv_path: string }) => p.drv_path === d));
      if (!ready) {
        pending.push(c);
        continue;
      }
      const printed = (await strataOk(['--store', root, 'derivation', 'add'], { input: JSON.stringify(body) })).trim();
      expect(printed, c.attr).toBe(c.drv_path);
      expect(readFileSync(join(root, printed), 'utf8')).toBe(c.drv_aterm);
    }
    expect(pending).toEqual([]);
    // And real Nix instantiating the same expression into another store writes identical files.
    const nixRoot = join(work, 'nix');
    const inst = runNix('nix-instantiate', ['--store', nixRoot, join(src, 'default.nix')]);
    expect(inst.code).toBe(0);
    for (const c of drvs.cases) expect(readFileSync(join(nixRoot, c.drv_path), 'utf8')).toBe(readFileSync(join(root, c.drv_path), 'utf8'));
  });

  it('refuses JSON whose output paths do not match, writing nothing', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const c = drvs.cases[0];
    const body = structuredClone(c.show_derivation);
    body.outputs.out.path = '/nix/store/00000000000000000000000000000000-simple';
    const { runStrata } = await import('../support/cli.js');
    const r = await runStrata(['--store', root, 'derivation', 'add'], { input: JSON.stringify(body) });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: Cannot add derivation 'simple': output 'out'/);
    expect(r.stderr.trim().split('\n').length).toBe(1);
    expect(JSON.parse(await strataOk(['--store', root, '--json', 'path-info', '--all']))).toEqual([]);
  });
});
