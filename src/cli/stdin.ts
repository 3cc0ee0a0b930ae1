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
 * Standard input in chunks of at most `size` bytes, read into two buffers in turn: the next chunk
 * is read (in the thread pool) while the consumer works on this one, which stays valid only
 * until the next is asked for. For a consumer that keeps nothing of a chunk (an import restoring
 * as it reads): a fresh buffer per read costs a page fault per 4 KiB of input.
 */
export async function* stdinChunksReused(size: number): AsyncGenerator<Uint8Array> {
  const bufs = [Buffer.allocUnsafe(size), Buffer.allocUnsafe(size)];
  const readInto = (buf: Buffer) => new Promise<Buffer>((resolve, reject) => read(0, buf, 0, size, null, (e, got) => (e ? reject(e) : resolve(buf.subarray(0, got)))));
  let next = readInto(bufs[0]!);
  for (let turn = 1; ; turn++) {
    const chunk = await next;
    if (chunk.length === 0) return;
    next = readInto(bufs[turn & 1]!);
    // Awaited on the next turn; if the consumer stops before, its failure is not an unhandled one.
    next.catch(() => {});
    yield chunk;
  }
}
