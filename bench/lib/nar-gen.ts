/**
 * Synthetic store objects as NARs: a directory with an executable `bin/<name>` and a few files
 * under `lib/`, sizes drawn log-normally. The NAR bytes are produced directly (no tree on disk),
 * hashed as they are produced and written to a file beside their declared PathInfo.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';

import { Hash } from '../../src/core/hash.js';
import { NarWriter } from '../../src/core/nar/writer.js';
import type { StoreDir, StorePath } from '../../src/core/store-path.js';
import type { PathInfo } from '../../src/store/store.js';
import { fill, logNormal } from './random.js';

/** A block of random bytes reused (at random offsets) for every file: generation stays fast. */
let pool: Buffer | undefined;

function bytes(rand: () => number, n: number): Buffer {
  pool ??= fill(rand, Buffer.allocUnsafe(8 * 1024 * 1024));
  if (n <= pool.length) {
    const off = Math.floor(rand() * (pool.length - n + 1));
    return pool.subarray(off, off + n);
  }
  return fill(rand, Buffer.allocUnsafe(n));
}

/**
 * Writes the NAR of one synthetic object of about `totalBytes` bytes of file contents in
 * `files` files to `narFile`, and returns its declared info.
 */
export function writeSyntheticNar(
  rand: () => number,
  storeDir: StoreDir,
  path: StorePath,
  references: StorePath[],
  totalBytes: number,
  files: number,
  narFile: string,
): PathInfo {
  const fd = openSync(narFile, 'w');
  const h = createHash('sha256');
  let size = 0;
  const w = new NarWriter((c) => {
    h.update(c);
    size += c.length;
    writeSync(fd, c);
  });
  // Split the bytes among the files with log-normal weights: one or two big files, many small.
  const weights = Array.from({ length: files }, () => logNormal(rand, 1, 1));
  const sum = weights.reduce((a, b) => a + b, 0);
  const sizes = weights.map((x) => Math.max(0, Math.round((x / sum) * totalBytes)));
  // Text-like files name their references, as real ones do (the scanner would find them).
  const refText = Buffer.from(references.map((r) => storeDir.print(r)).join('\n'));
  w.directory();
  w.entry(Buffer.from('bin'));
  w.directory();
  w.entry(Buffer.from(path.name));
  const exe = Buffer.concat([refText, bytes(rand, sizes[0]!)]);
  w.regular(true, exe.length);
  w.contents(exe);
  w.regularEnd();
  w.directoryEnd();
  if (files > 1) {
    w.entry(Buffer.from('lib'));
    w.directory();
    for (let i = 1; i < files; i++) {
      w.entry(Buffer.from(`f${String(i).padStart(4, '0')}.so`));
      const b = bytes(rand, sizes[i]!);
      w.regular(false, b.length);
      if (b.length > 0) w.contents(b);
      w.regularEnd();
    }
    w.directoryEnd();
  }
  w.directoryEnd();
  w.end();
  closeSync(fd);
  return {
    path,
    narHash: new Hash('sha256', h.digest()),
    narSize: size,
    references: [...references].sort((a, b) => (a.baseName < b.baseName ? -1 : 1)),
    ultimate: false,
    sigs: [],
  };
}
