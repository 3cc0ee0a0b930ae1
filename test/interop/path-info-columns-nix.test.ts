/**
 * `strata path-info -s/-S/-h/--sigs` print the columns `nix path-info` 2.8 prints, byte for byte:
 * sizes right-aligned in 11 columns, or human-readable as Nix's `%6.1f%c` (ties rounded to even,
 * as printf rounds them), signatures as `ultimate`, `ca:…` and the signatures, space-separated.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { runStrata } from '../support/cli.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

beforeAll(() => {
  if (!haveNix()) throw new Error('real Nix 2.8 (nix-bin) is required: run scripts/setup.sh');
});

describe('strata path-info columns against nix path-info', () => {
  it('prints -s, -S, -h and --sigs as Nix does, alone and with -r', { timeout: 120_000 }, async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const add = (name: string, bytes: number | string): string => {
      const file = join(work, name);
      writeFileSync(file, typeof bytes === 'string' ? bytes : Buffer.alloc(bytes, 0x61));
      const r = runNix('nix-store', ['--store', root, '--add', file]);
      expect(r.stderr).toBe('');
      return r.stdout.trim();
    };
    // NAR sizes (112 bytes of framing plus the contents padded to 8): 120, 1024, 1025,
    // 1280 (1.25K, a tie printf rounds down to even), 1792 (1.75K, a tie rounded up) and 1 MiB.
    const small = add('small', 'x');
    const exact = add('exact', 1024 - 112);
    const above = add('above', 1025 - 112);
    const tieDown = add('tie-down', 1280 - 112);
    const tieUp = add('tie-up', 1792 - 112);
    const mib = add('mib', 1024 * 1024 - 112);
    // A path with references, and one signed by a key.
    const ref = join(work, 'with-refs');
    writeFileSync(ref, `${small}\n${tieDown}\n`);
    const withRefs = runNix('nix-store', ['--store', root, '--add', ref]).stdout.trim();
    const key = join(work, 'key.sec');
    writeFileSync(key, runNix('nix', ['key', 'generate-secret', '--key-name', 'test-1']).stdout);
    expect(runNix('nix', ['store', 'sign', '--store', root, '-k', key, tieUp]).code).toBe(0);

    const all = [small, exact, above, tieDown, tieUp, mib, withRefs];
    const cases: string[][] = [
      ['-s', ...all],
      ['-h', '-s', ...all],
      ['--human-readable', '--size', '--closure-size', ...all],
      ['-S', '-h', mib],
      ['--sigs', ...all],
      ['--sigs', '-s', '-h', tieUp],
      ['-r', '-s', '-S', '--sigs', withRefs],
      ['-h', withRefs],
      ['-s', join(work, 'absent')],
    ];
    for (const args of cases) {
      const n = runNix('nix', ['path-info', '--store', root, ...args]);
      const s = await runStrata(['--store', root, 'path-info', ...args]);
      expect({ args, code: s.code, out: s.stdout.toString() }).toEqual({ args, code: n.code, out: n.stdout });
    }
  });
});
