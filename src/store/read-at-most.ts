/** Reading a small stream whole, with a cap a hostile or broken source cannot push us past. */
import type { Readable } from 'node:stream';

/**
 * The bytes of `stream` when it ends within `limit` bytes; `undefined` (and the stream
 * destroyed) as soon as it goes past them, so no more than `limit` plus one chunk is ever held.
 * A single chunk is returned as it is, not copied.
 */
export async function readAtMost(stream: Readable, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      stream.destroy();
      return undefined;
    }
    chunks.push(chunk);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
}
