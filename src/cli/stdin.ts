/** Reading standard input. */
import { read } from 'node:fs';

import { readAtMost } from '../store/read-at-most.js';

/** Reads all of standard input (small inputs only: JSON documents, not NARs). */
export async function readStdin(limit = 64 * 1024 * 1024): Promise<Buffer> {
  const all = await readAtMost(process.stdin, limit);
  if (!all) throw new Error(`standard input is larger than ${limit} bytes`);
  return all;
}

/**
 * Standard input in chunks read into one buffer of `size` bytes: each chunk is valid only until
 * the next is asked for. For a consumer that keeps nothing of a chunk (an import restoring as it
 * reads): a fresh buffer per read costs a page fault per 4 KiB of input.
 */
export async function* stdinChunksReused(size: number): AsyncGenerator<Uint8Array> {
  const buf = Buffer.allocUnsafe(size);
  for (;;) {
    const n = await new Promise<number>((resolve, reject) => read(0, buf, 0, size, null, (e, got) => (e ? reject(e) : resolve(got))));
    if (n === 0) return;
    yield buf.subarray(0, n);
  }
}
