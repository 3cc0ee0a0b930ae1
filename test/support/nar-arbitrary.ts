/** Random NAR trees for property tests, and the pieces a stream would cut a NAR into. */
import fc from 'fast-check';

import type { NarEntry } from '../../src/core/nar/format.js';

/** A regular file entry holding `contents`. */
export function narFile(contents: Buffer, executable = false): NarEntry {
  return { type: 'regular', executable, size: contents.length, contents: [contents] };
}

/** Entry names of raw bytes: anything but NUL, `/`, `.` and `..`. */
const nameArb = fc
  .uint8Array({ minLength: 1, maxLength: 12 })
  .filter((n) => !n.includes(0) && !n.includes(0x2f) && !(n.every((b) => b === 0x2e) && n.length <= 2));

/** Trees of files (up to `maxFileBytes` each), symlinks and directories of up to 5 entries. */
export function narTreeArb(maxFileBytes: number): fc.Arbitrary<NarEntry> {
  return fc.letrec<{ node: NarEntry }>((tie) => ({
    node: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.record({ executable: fc.boolean(), bytes: fc.uint8Array({ maxLength: maxFileBytes }) }).map(({ executable, bytes }) => narFile(Buffer.from(bytes), executable)),
      fc.uint8Array({ minLength: 1, maxLength: 30 }).filter((t) => !t.includes(0)).map((t): NarEntry => ({ type: 'symlink', target: Buffer.from(t) })),
      fc
        .uniqueArray(fc.tuple(nameArb, tie('node')), { maxLength: 5, selector: ([n]) => Buffer.from(n).toString('hex') })
        .map((entries): NarEntry => ({ type: 'directory', entries: entries.map(([n, e]) => [Buffer.from(n), e] as const) })),
    ),
  })).node;
}

/** `bytes` cut into pieces of `step` bytes (the last shorter). */
export function inPieces(bytes: Buffer, step: number): Buffer[] {
  return Array.from({ length: Math.ceil(bytes.length / step) }, (_, k) => bytes.subarray(k * step, k * step + step));
}
