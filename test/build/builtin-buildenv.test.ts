/**
 * `builtin:buildenv` derivations (what nix-env builds profiles with): strata builds them
 * in-process, in a chroot store (the packages' files elsewhere than their logical paths), and
 * the profile is the one real Nix 2.8's `nix-store -r` of the same .drv makes, byte for byte;
 * a collision between packages of equal priority fails and registers nothing.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { realise } from '../../src/build/index.js';
import { haveNix, nixInPrivateNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { instantiate, openChroot, snapshot } from './helpers.js';

const isRoot = process.getuid?.() === 0;

const PACKAGES = `
  mk = name: script: derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; };
  dep = mk "dep" ''/bin/mkdir -p $out/bin $out/share/dep; echo dep > $out/bin/dep; echo x > $out/share/dep/x'';
  a = mk "a" ''/bin/mkdir -p $out/bin $out/share/doc $out/nix-support $out/lib; echo a > $out/bin/tool; echo a > $out/bin/a; echo hidden > $out/.hidden; echo d > $out/share/doc/a; echo \${dep} > $out/nix-support/propagated-user-env-packages; /bin/ln -s nowhere $out/bin/dangling; echo log > $out/log; echo m > $out/lib/manifest.json'';
  b = mk "b" ''/bin/mkdir -p $out/bin $out/share/doc/b; echo b > $out/bin/tool; echo b > $out/bin/b; echo d > $out/share/doc/b/x; /bin/ln -s share $out/shr'';
  c = mk "c" ''/bin/mkdir -p $out/share/doc; echo c > $out/share/doc/c; /bin/ln -s \${b}/share/doc $out/share/docs'';
  inactive = mk "inactive" ''/bin/mkdir -p $out/bin; echo i > $out/bin/tool'';
  manifest = builtins.toFile "env-manifest.nix" "[ ]";
`;

function envFile(derivations: string): string {
  const f = join(tempDir(), 'env.nix');
  writeFileSync(
    f,
    `let ${PACKAGES} in derivation {
  name = "user-environment"; system = "builtin"; builder = "builtin:buildenv";
  inherit manifest;
  derivations = [ ${derivations} ];
  preferLocalBuild = true; allowSubstitutes = false;
}
`,
  );
  return f;
}

describe.skipIf(!isRoot || !haveNix())('builtin:buildenv', () => {
  it('makes the profile real Nix 2.8 makes: priorities, shared dirs split, propagated packages, skipped entries', async () => {
    const file = envFile('"true" 5 1 a "true" 3 1 b "true" 5 1 c "false" 1 1 inactive');
    const { root, drvs } = instantiate(file);
    const store = await openChroot(root);
    let ours;
    try {
      const drv = store.storeDir.parse(drvs[0]!);
      const [r] = await realise(store, [drv]);
      expect(r!.error).toBeUndefined();
      const out = (await store.queryDerivationOutputs(drv)).get('out')!;
      const info = (await store.queryPathInfo(out))!;
      ours = {
        path: store.storeDir.print(info.path),
        narHash: info.narHash.toSri(),
        narSize: info.narSize,
        references: info.references.map((p) => store.storeDir.print(p)),
      };
    } finally {
      await store.close();
    }
    const nix = await nixInPrivateNix(
      tempDir(),
      `d=$(nix-instantiate ${file}) && nix-store -r $d >/dev/null && nix path-info --json $(nix-store -q --outputs $d)`,
    );
    expect(nix.code, nix.stderr).toBe(0);
    const [theirs] = JSON.parse(nix.stdout) as { path: string; narHash: string; narSize: number; references: string[] }[];
    expect(ours).toEqual({
      path: theirs!.path,
      narHash: theirs!.narHash,
      narSize: theirs!.narSize,
      references: theirs!.references,
    });
  }, 120_000);

  it('two packages of the same priority providing one file fail, as in Nix, and nothing becomes valid', async () => {
    const file = envFile('"true" 5 1 a "true" 5 1 b');
    const { root, drvs } = instantiate(file);
    const store = await openChroot(root);
    try {
      const drv = store.storeDir.parse(drvs[0]!);
      const [r] = await realise(store, [drv]);
      const out = (await store.queryDerivationOutputs(drv)).get('out')!;
      expect(r!.error?.message).toMatch(
        /^Cannot build '\/nix\/store\/[^']+-user-environment\.drv': builtin:buildenv failed: packages '\/nix\/store\/[^']+-a\/bin\/tool' and '\/nix\/store\/[^']+-b\/bin\/tool' have the same priority 5; /,
      );
      expect(await store.isValidPath(out)).toBe(false);
      const before = await snapshot(store);
      await realise(store, [drv]);
      expect(await snapshot(store)).toEqual(before);
    } finally {
      await store.close();
    }
  }, 60_000);
});
