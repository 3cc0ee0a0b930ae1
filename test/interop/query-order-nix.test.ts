/**
 * `strata query` prints what `nix-store -q` prints, line for line: the relation queries as the
 * union of their answers in Nix's topological order, --deriver and --outputs once per argument,
 * and --roots through a derivation's outputs (keep-derivations). `strata path-info` likewise
 * prints what `nix path-info` prints.
 */
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { runStrata } from '../support/cli.js';
import { haveNix, nixBuildExpr, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

beforeAll(() => {
  if (!haveNix()) throw new Error('real Nix 2.8 (nix-bin) is required: run scripts/setup.sh');
});

const EXPR = `
let
  a = builtins.toFile "a.txt" "A";
  b = derivation { name = "b"; system = "x86_64-linux"; builder = "/bin/sh"; args = ["-c" "echo \${a} > $out"]; };
  c = derivation { name = "c"; system = "x86_64-linux"; builder = "/bin/sh";
    args = ["-c" "/bin/mkdir $out; echo \${b} > $out/r; echo $out > $out/self; /bin/ln -s \${a} $out/l"]; };
  m = derivation { name = "m"; system = "x86_64-linux"; builder = "/bin/sh"; outputs = [ "out" "dev" "bin" "lib" ];
    args = ["-c" "echo \${a} > $out; echo \${c} > $dev; echo $out > $bin; echo x > $lib"]; };
in { inherit b c m; }
`;

describe('strata query against nix-store -q', () => {
  it('prints the same lines in the same order', { timeout: 120_000 }, async () => {
    const work = tempDir();
    const { root, outs } = nixBuildExpr(work, EXPR);
    const [b, c, mOut] = outs as [string, string, string];
    expect(mOut).toMatch(/-m$/);
    const q = (flag: string, path: string): string => runNix('nix-store', ['--store', root, '-q', flag, path]).stdout.trim();
    const a = q('--references', b);
    const bDrv = q('--deriver', b);
    const cDrv = q('--deriver', c);
    const mDrv = q('--deriver', mOut);
    const outputOf = (name: string): string => q('--outputs', mDrv).split('\n').find((o) => o.endsWith(`-m-${name}`))!;
    const [mBin, mDev, mLib] = [outputOf('bin'), outputOf('dev'), outputOf('lib')];
    // A root on m's out keeps m.drv alive; one on a.txt directly.
    mkdirSync(join(work, 'links'));
    symlinkSync(mOut, join(work, 'links', 'result'));
    mkdirSync(join(root, 'nix/var/nix/gcroots/auto'), { recursive: true });
    symlinkSync(join(work, 'links', 'result'), join(root, 'nix/var/nix/gcroots/auto/r1'));
    symlinkSync(a, join(root, 'nix/var/nix/gcroots/a'));
    // A link to a link (relative), as `nix-store -q` follows them into the store.
    symlinkSync('result', join(work, 'links', 'again'));

    const cases: string[][] = [
      ['--references', c],
      ['--references', mDev, mOut, mBin],
      ['--references', mDrv],
      ['--referrers', a],
      ['--referrers', a, b, c],
      ['--requisites', mDev, a],
      ['--requisites', mDrv, mOut],
      ['--deriver', a, a],
      ['--deriver', mOut, mDev, b, mBin],
      ['--outputs', mDrv],
      ['--outputs', mDrv, cDrv, mDrv],
      ['--outputs', mLib, '/nix/store/00000000000000000000000000000000-absent'],
      ['--roots', mDrv],
      ['--roots', bDrv],
      ['--references', join(work, 'links', 'again')],
      ['--deriver', join(work, 'links', 'result'), `${c}/r`, `${c}/`],
      ['--deriver', join(work, 'default.nix')],
      // Nix checks validity only where it reads a path's own info: an invalid path has no
      // referrers and is kept by no root, but an invalid derivation's outputs cannot be read.
      ['--referrers', '/nix/store/00000000000000000000000000000000-absent'],
      ['--referrers', '/nix/store/00000000000000000000000000000000-absent', a],
      ['--roots', '/nix/store/00000000000000000000000000000000-absent', mDrv],
      ['--roots', '/nix/store/00000000000000000000000000000000-absent.drv'],
      ['--references', a, '/nix/store/00000000000000000000000000000000-absent'],
    ];
    for (const args of cases) {
      const n = runNix('nix-store', ['--store', root, '-q', ...args]);
      const s = await runStrata(['--store', root, 'query', ...args]);
      expect({ args, code: s.code, out: s.stdout.toString() }).toEqual({ args, code: n.code, out: n.stdout });
    }
  });
});

describe('strata path-info against nix path-info', () => {
  it('prints the same text and JSON: a set of paths, references first, sizes aligned', { timeout: 120_000 }, async () => {
    const work = tempDir();
    const { root, outs } = nixBuildExpr(work, EXPR);
    const [b, c, mOut] = outs as [string, string, string];
    const a = runNix('nix-store', ['--store', root, '-q', '--references', b]).stdout.trim();
    const absent = '/nix/store/00000000000000000000000000000000-absent';
    const mDrv = runNix('nix-store', ['--store', root, '-q', '--deriver', mOut]).stdout.trim();
    // A derivation instantiated but never built: its outputs are not valid.
    writeFileSync(join(work, 'unbuilt.nix'), 'derivation { name = "unbuilt"; system = "x86_64-linux"; builder = "/bin/sh"; outputs = [ "out" "doc" ]; }');
    const unbuilt = runNix('nix-instantiate', ['--store', root, join(work, 'unbuilt.nix')]).stdout.trim();
    expect(unbuilt).toMatch(/-unbuilt\.drv$/);
    const cases: string[][] = [
      // A derivation stands for its outputs; --derivation for itself, and a path for its deriver.
      [mDrv],
      ['-r', '-s', mDrv, c],
      ['--derivation', mDrv, c],
      ['--derivation', '-r', b],
      ['--derivation', a],
      [unbuilt],
      ['--json', unbuilt, mDrv],
      ['--json', '--derivation', mOut],
      ['--json', '--derivation', `${absent}.drv`],
      ['-r', c],
      ['-r', mOut, a],
      [c, a, c],
      ['-S', '-r', c],
      ['-S', mOut, b, a],
      ['--all'],
      [c, absent],
      ['--json', c, c],
      ['--json', '-S', '-r', mOut],
      ['--json', c, absent],
    ];
    for (const args of cases) {
      const n = runNix('nix', ['path-info', '--store', root, ...args]);
      const json = args[0] === '--json';
      const s = await runStrata(['--store', root, ...(json ? ['--json'] : []), 'path-info', ...args.slice(json ? 1 : 0)]);
      // Byte for byte, JSON included: Nix 2.8 ends its JSON without a newline, and so does strata.
      expect({ args, code: s.code, out: s.stdout.toString() }).toEqual({ args, code: n.code, out: n.stdout });
    }
    // A binary cache has no table of outputs: a derivation's are read from the .drv, as Nix does.
    const cache = `file://${join(work, 'cache')}?compression=none`;
    expect(runNix('nix', ['copy', '--store', root, '--to', cache, '--all']).code).toBe(0);
    for (const args of [[mDrv], ['-r', mDrv], ['--derivation', mDrv], [unbuilt]]) {
      const n = runNix('nix', ['path-info', '--store', cache, ...args]);
      const s = await runStrata(['--store', cache, 'path-info', ...args]);
      expect({ args, code: s.code, out: s.stdout.toString() }).toEqual({ args, code: n.code, out: n.stdout });
    }
  });
});
