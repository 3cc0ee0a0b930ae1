/**
 * `strata query --tree`, `--graph`, `--hash`, `--size`, `--referrers-closure` (and the short
 * `-R`, `-d`, --outputs by default, `-u` and `--include-outputs`) print what `nix-store -q` 2.8 prints, byte for byte,
 * including what Nix prints before it fails on an invalid path.
 */
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { runStrata } from '../support/cli.js';
import { haveNix, nixBuildExpr, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

beforeAll(() => {
  if (!haveNix()) throw new Error('real Nix 2.8 (nix-bin) is required: run scripts/setup.sh');
});

// A self-referencing output (c), a multi-output derivation (m), and a DAG of 24 text files whose
// references cross (file i refers to files i-1, i-3 and i/2), so trees repeat paths and graphs
// take their work list in name order.
const FILES = Array.from({ length: 24 }, (_, i) => {
  const refs = i === 0 ? [] : [...new Set([i - 1, i - 3, Math.floor(i / 2)].filter((j) => j >= 0 && j < i))];
  return `  f${i} = builtins.toFile "f${i}" "${refs.map((j) => `\${f${j}}`).join(' ')} ${i}";`;
}).join('\n');
const EXPR = `
let
  a = builtins.toFile "a.txt" "A";
${FILES}
  b = derivation { name = "b"; system = "x86_64-linux"; builder = "/bin/sh"; args = ["-c" "echo \${a} \${f23} > $out"]; };
  c = derivation { name = "c"; system = "x86_64-linux"; builder = "/bin/sh";
    args = ["-c" "/bin/mkdir $out; echo \${b} > $out/r; echo $out > $out/self; /bin/ln -s \${a} $out/l"]; };
  m = derivation { name = "m"; system = "x86_64-linux"; builder = "/bin/sh"; outputs = [ "out" "dev" ];
    args = ["-c" "echo \${a} \${f7} > $out; echo \${c} $out > $dev"]; };
in { inherit b c m; }
`;

describe('strata query --tree/--graph/--hash/--size/--referrers-closure against nix-store -q', () => {
  it('prints the same bytes and exit codes', { timeout: 120_000 }, async () => {
    const work = tempDir();
    const { root, outs } = nixBuildExpr(work, EXPR);
    const [b, c, mOut] = outs as [string, string, string];
    const q = (flag: string, path: string): string => runNix('nix-store', ['--store', root, '-q', flag, path]).stdout.trim();
    const mDrv = q('--deriver', mOut);
    const mDev = q('--outputs', mDrv).split('\n').find((o) => o.endsWith('-m-dev'))!;
    const files = q('--requisites', b).split('\n').filter((p) => /-f\d+$/.test(p));
    expect(files).toHaveLength(24);
    const a = q('--requisites', c).split('\n').find((p) => p.endsWith('-a.txt'))!;
    const f0 = files.find((p) => p.endsWith('-f0'))!;
    const absent = '/nix/store/00000000000000000000000000000000-absent';

    const cases: string[][] = [
      ['--tree', mDev],
      ['--tree', c, mDev, b],
      ['--tree', mDrv],
      ['--tree', c, absent],
      ['--graph', mDev],
      ['--graph', mDrv, a, a],
      ['--graph', absent],
      ['--hash', c, a, c],
      ['--hash', mDrv, absent, c],
      ['--size', b, mDrv],
      ['--referrers-closure', f0],
      ['--referrers-closure', a, c],
      ['--referrers-closure', absent],
      ['-R', mDev],
      ['-d', mOut, b],
      ['--deriver', c, absent],
      [mDrv, c],
      ['--references', '--references', c],
      // -u: a derivation stands for its outputs (in path order), except for --deriver and --tree.
      ['-u', '--hash', mDrv, c],
      ['--use-output', '--size', mDrv],
      ['-u', '-R', mDrv],
      ['-u', '--graph', mDrv],
      ['-u', '--tree', mDrv],
      ['-u', '-d', mDrv],
      ['-R', '--include-outputs', mDrv],
      ['--requisites', '--include-outputs', mDrv, a],
    ];
    for (const args of cases) {
      const n = runNix('nix-store', ['--store', root, '-q', ...args]);
      const s = await runStrata(['--store', root, 'query', ...args]);
      expect({ args, code: s.code, out: s.stdout.toString() }).toEqual({ args, code: n.code, out: n.stdout });
    }
    // A binary cache has no table of outputs: they are read from the .drv, as Nix reads them.
    const cache = `file://${join(work, 'cache')}?compression=none`;
    expect(runNix('nix', ['copy', '--store', root, '--to', cache, '--all']).code).toBe(0);
    for (const args of [['--outputs', mDrv], ['-u', '--hash', mDrv], ['-R', '--include-outputs', mDrv]]) {
      const n = runNix('nix-store', ['--store', cache, '-q', ...args]);
      const s = await runStrata(['--store', cache, 'query', ...args]);
      expect({ args, code: s.code, out: s.stdout.toString() }).toEqual({ args, code: n.code, out: n.stdout });
    }
  });
});
