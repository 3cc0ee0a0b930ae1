/**
 * Fuzzing the NAR parser (issue 8 §5): mutated real NARs (the shared vectors, made by Nix 2.8)
 * and mutated random canonical trees, fed in random chunk sizes. The only outcomes allowed: a
 * `NAR_INVALID` StrataError, or success on a canonical archive that re-encodes to the very
 * same bytes. `restoreNar` gets a smaller dose on disk: a failure leaves nothing behind, a
 * success dumps back to the same bytes.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { StrataError } from '../../src/core/error.js';
import { str } from '../../src/core/nar/format.js';
import { NarParser } from '../../src/core/nar/parser.js';
import { NarWriter } from '../../src/core/nar/writer.js';
import { dumpPath } from '../../src/fs/nar-dump.js';
import { restoreNar } from '../../src/fs/nar-restore.js';
import { tempDir } from '../support/tmp.js';
import { loadVector } from '../support/vectors.js';
import { mutated } from './_mutate.js';
import { SEED, TIMEOUT, count, record } from './_torture.js';

type Tree =
  | { t: 'f'; x: boolean; c: Uint8Array }
  | { t: 'l'; target: Uint8Array }
  | { t: 'd'; e: Array<[Uint8Array, Tree]> };

const nameArb = fc.oneof(
  fc.constantFrom('a', 'b', 'bin', 'lib', '.x', '...', 'A', 'z\u00e9', '-'),
  fc
    .uint8Array({ minLength: 1, maxLength: 12 })
    .filter(
      (n) => !n.includes(0) && !n.includes(0x2f) && !(n.every((b) => b === 0x2e) && n.length <= 2),
    ),
);
const treeArb: fc.Arbitrary<Tree> = fc.letrec<{ node: Tree }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.record({
      t: fc.constant('f' as const),
      x: fc.boolean(),
      c: fc.uint8Array({ maxLength: 40 }),
    }),
    fc.record({
      t: fc.constant('l' as const),
      target: fc.uint8Array({ minLength: 1, maxLength: 20 }).filter((t) => !t.includes(0)),
    }),
    fc.record({
      t: fc.constant('d' as const),
      e: fc.uniqueArray(
        fc.tuple(
          nameArb.map((n) => Buffer.from(typeof n === 'string' ? n : n)),
          tie('node'),
        ),
        { maxLength: 4, selector: ([n]) => Buffer.from(n).toString('latin1') },
      ),
    }),
  ),
})).node;

/** Encodes a tree with the canonical writer (entries sorted by it). */
function encode(tree: Tree): Buffer {
  const out: Buffer[] = [];
  const w = new NarWriter((c) => out.push(Buffer.from(c)));
  const walk = (n: Tree): void => {
    if (n.t === 'f') {
      w.regular(n.x, n.c.length);
      if (n.c.length) w.contents(n.c);
      w.regularEnd();
    } else if (n.t === 'l') w.symlink(n.target);
    else {
      w.directory();
      for (const [name, child] of [...n.e].sort((a, b) =>
        Buffer.compare(Buffer.from(a[0]), Buffer.from(b[0])),
      )) {
        w.entry(name);
        walk(child);
      }
      w.directoryEnd();
    }
  };
  walk(tree);
  w.end();
  return Buffer.concat(out);
}

const corpus: Buffer[] = [
  ...loadVector('nar.json').cases.map((c: { nar_b64: string }) => Buffer.from(c.nar_b64, 'base64')),
  ...loadVector('nar-restore.json').cases.map((c: { nar_b64: string }) =>
    Buffer.from(c.nar_b64, 'base64'),
  ),
];
const tokens = [
  '(',
  ')',
  'type',
  'regular',
  'directory',
  'symlink',
  'entry',
  'name',
  'node',
  'contents',
  'executable',
  'target',
  '..',
  '.',
  'a/b',
  'a\0b',
  '',
  'nix-archive-1',
].map((t) => str(t));
tokens.push(Buffer.alloc(8), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]));

const inputArb = fc.oneof(
  mutated(corpus, tokens, 8),
  fc.tuple(treeArb, fc.array(fc.nat(), { maxLength: 0 })).map(([t]) => encode(t)),
  fc.tuple(treeArb, fc.nat()).chain(([t]) => mutated([encode(t)], tokens, 8)),
);

/** Parses `bytes` fed in `step`-byte chunks and re-encodes the events. Throws what the parser throws. */
function parseAndReencode(bytes: Buffer, step: number): Buffer {
  const p = new NarParser();
  const out: Buffer[] = [];
  const w = new NarWriter((c) => out.push(Buffer.from(c)));
  for (let i = 0; i < bytes.length; i += step)
    for (const ev of p.feed(bytes.subarray(i, i + step))) w.write(ev);
  p.end();
  w.end();
  return Buffer.concat(out);
}

describe('torture: NAR fuzzing', { timeout: TIMEOUT }, () => {
  it('the NAR parser only succeeds on canonical archives and otherwise throws NAR_INVALID', () => {
    const runs = count(3_000, 500_000);
    let inputs = 0;
    let accepted = 0;
    fc.assert(
      fc.property(inputArb, fc.integer({ min: 1, max: 4096 }), (bytes, step) => {
        inputs++;
        let back: Buffer;
        try {
          back = parseAndReencode(bytes, step);
        } catch (e) {
          if (!(e instanceof StrataError) || e.code !== 'NAR_INVALID')
            throw new Error(`unexpected ${String(e)}`, { cause: e });
          expect(e.message).not.toContain('\n');
          return;
        }
        accepted++;
        expect(back.equals(bytes)).toBe(true);
      }),
      { numRuns: runs, seed: SEED },
    );
    record('fuzz: NAR parser', { inputs, failures: 0 });
    expect(accepted).toBeGreaterThan(0);
  });

  it('restoreNar leaves nothing behind on a bad archive and restores a good one byte for byte', async () => {
    const runs = count(150, 5_000);
    const dir = tempDir();
    let n = 0;
    await fc.assert(
      fc.asyncProperty(inputArb, async (bytes) => {
        const target = join(dir, `t${n++}`);
        let ok = true;
        try {
          await restoreNar(Readable.from([bytes]), target, { canonicalise: n % 2 === 0 });
        } catch (e) {
          ok = false;
          if (!(e instanceof StrataError) || e.code !== 'NAR_INVALID')
            throw new Error(`unexpected ${String(e)}`, { cause: e });
        }
        if (!ok) {
          expect(existsSync(target)).toBe(false);
          expect(readdirSync(dir)).toEqual([]);
          return;
        }
        const chunks: Buffer[] = [];
        for await (const c of dumpPath(target)) chunks.push(Buffer.from(c as Uint8Array));
        expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
        const { rmSync, chmodSync } = await import('node:fs');
        try {
          rmSync(target, { recursive: true, force: true });
        } catch {
          chmodSync(target, 0o755);
          rmSync(target, { recursive: true, force: true });
        }
      }),
      { numRuns: runs, seed: SEED },
    );
    record('fuzz: restoreNar on disk', { inputs: runs, failures: 0 });
  });
});
