/**
 * Every derivation of ../shared/vectors/derivations.json built by strata gives the output paths,
 * NAR hashes, sizes, references and DB fields real Nix 2.8 recorded, whether the .drv files were
 * written by real `nix-instantiate` or by `strata derivation add`; and real Nix accepts the store.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { realiseOrThrow } from '../../src/build/index.js';
import type { LocalFsStore } from '../../src/store/store.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { loadVector } from '../support/vectors.js';
import { openChroot } from './helpers.js';

const V = loadVector('derivations.json');
/** One built output as real Nix 2.8 registered it (derivations.json). */
interface BuiltOutput {
  path: string;
  nar_sha256_hex: string;
  nar_size: number;
  references: string[];
  db_row: { ca: string | null };
  path_info: Record<string, unknown>;
}
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const cases: any[] = V.cases;
const isRoot = process.getuid?.() === 0;

/** Checks every built output of every case against what real Nix registered. */
async function expectLikeNix(store: LocalFsStore): Promise<void> {
  for (const c of cases) {
    for (const [name, b] of Object.entries<BuiltOutput>(c.built)) {
      const info = await store.queryPathInfo(store.storeDir.parse(b.path));
      expect(info, `${c.attr}.${name}`).toBeDefined();
      expect(info!.narHash.toBase16(), `${c.attr}.${name} NAR hash`).toBe(b.nar_sha256_hex);
      expect(info!.narSize).toBe(b.nar_size);
      expect(info!.references.map((r) => store.storeDir.print(r))).toEqual(b.references);
      expect(store.storeDir.print(info!.deriver!)).toBe(c.drv_path);
      expect(info!.ultimate).toBe(true);
      expect(info!.ca ?? null).toBe(b.db_row.ca);
    }
  }
}

describe.skipIf(!haveNix() || !isRoot)('realise: the derivation vectors', () => {
  it('realise() builds every vector derivation instantiated by real nix-instantiate like Nix 2.8 did', async () => {
    const dir = tempDir();
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'default.nix'), V.nix_source);
    for (const [f, text] of Object.entries<string>(V.extra_files))
      writeFileSync(join(src, f), text);
    const root = join(dir, 'store');
    const inst = runNix('nix-instantiate', ['--store', root, join(src, 'default.nix')]);
    expect(inst.code, inst.stderr).toBe(0);
    const drvs = inst.stdout
      .trim()
      .split('\n')
      .map((l) => l.replace(/!.*$/, ''));
    expect(drvs.length).toBe(cases.length);

    const store = await openChroot(root);
    try {
      const outs = await realiseOrThrow(
        store,
        drvs.map((d) => store.storeDir.parse(d)),
        { jobs: 2 },
      );
      for (const [i, d] of drvs.entries()) {
        const c = cases.find((x) => x.drv_path === d)!;
        expect(
          Object.fromEntries([...outs[i]!].map(([k, p]) => [k, store.storeDir.print(p)])),
        ).toEqual(c.outputs);
      }
      await expectLikeNix(store);
    } finally {
      await store.close();
    }
    const verify = runNix('nix-store', ['--store', root, '--verify', '--check-contents']);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stderr).not.toMatch(/modified|corrupt|error/i);
  });

  it('`strata realise` builds .drv files written by `strata derivation add`; real Nix verifies the store and path-info matches', async () => {
    ensureBuilt();
    const root = tempDir();
    const store0 = await openChroot(root);
    try {
      // The two sources of `withSrcs`: a toFile text and a copied path.
      const bsh = await store0.addText('builder.sh', 'read x < $src; echo "$x" > $out\n', []);
      const dataFile = join(tempDir(), 'data.txt');
      writeFileSync(dataFile, V.extra_files['data.txt']);
      const data = await store0.addPath(dataFile, { name: 'data.txt' });
      const withSrcs = cases.find((c) => c.attr === 'withSrcs')!;
      expect([store0.storeDir.print(bsh.path), store0.storeDir.print(data.path)].sort()).toEqual(
        withSrcs.show_derivation.inputSrcs,
      );
    } finally {
      await store0.close();
    }
    for (const c of cases) {
      const r = await runStrata(['--store', root, 'derivation', 'add'], {
        input: JSON.stringify(c.show_derivation),
      });
      expect(r.stderr).toBe('');
      expect(r.stdout.toString().trim()).toBe(c.drv_path);
    }
    const r = await runStrata([
      '--store',
      root,
      'realise',
      '-j',
      '2',
      ...cases.map((c) => c.drv_path),
    ]);
    expect(r.code, r.stderr).toBe(0);
    const printed = r.stdout.toString().trim().split('\n').sort();
    expect(printed).toEqual(cases.flatMap((c) => Object.values<string>(c.outputs)).sort());

    const store = await openChroot(root);
    try {
      await expectLikeNix(store);
    } finally {
      await store.close();
    }
    const verify = runNix('nix-store', ['--store', root, '--verify', '--check-contents']);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stderr).not.toMatch(/modified|corrupt|error/i);
    const all = cases.flatMap((c) => Object.values<BuiltOutput>(c.built));
    const pi = runNix('nix', ['path-info', '--store', root, '--json', ...all.map((b) => b.path)]);
    expect(pi.code, pi.stderr).toBe(0);
    const got = JSON.parse(pi.stdout) as Array<Record<string, unknown>>;
    for (const b of all) {
      const g = got.find((x) => x['path'] === b.path)!;
      const { registrationTime: _t, ...rest } = g;
      expect(rest).toEqual(b.path_info);
    }
    // And a second realise finds everything valid: nothing is built again.
    const again = await runStrata(['--store', root, 'realise', ...cases.map((c) => c.drv_path)]);
    expect(again.code).toBe(0);
    expect(again.stderr).not.toMatch(/building/);
  });
});
