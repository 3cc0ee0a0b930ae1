/**
 * bzip2, read only, through unbzip2-stream (pure JavaScript). Nix 2.8 still reads bzip2 (and a
 * narinfo without `Compression:` means bzip2), but nobody should write it any more: xz and zstd
 * are smaller and far faster, so strata has no bzip2 compressor.
 *
 * unbzip2-stream decodes a whole block (at most 900 kB before bzip2's run-length stage, so a
 * bounded amount) whenever it has 925 kB of input, and checks each block's and the stream's
 * CRC32. On truncated input it throws a TypeError from inside its bit reader; that and its other
 * errors become `COMPRESSION_INVALID` through `mapError`.
 */
import { Transform, type TransformCallback } from 'node:stream';

import unbzip2Stream from 'unbzip2-stream';

import { Bounded } from './_bounded.js';

/** unbzip2-stream's classic stream as a Transform; all its work happens inside write() and end(). */
class Bunzip2 extends Transform {
  readonly #decoder = unbzip2Stream();
  #error: Error | undefined;
  #ended = false;

  constructor() {
    super();
    this.#decoder.on('data', (chunk: Buffer) => this.push(chunk));
    this.#decoder.on('error', (e: Error) => (this.#error ??= e));
    this.#decoder.on('end', () => (this.#ended = true));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    try {
      this.#decoder.write(chunk);
    } catch (e) {
      this.#error ??= e instanceof Error ? e : new Error(String(e));
    }
    done(this.#error);
  }

  override _flush(done: TransformCallback): void {
    try {
      this.#decoder.end();
    } catch (e) {
      this.#error ??= e instanceof Error ? e : new Error(String(e));
    }
    done(this.#error ?? (this.#ended ? undefined : new Error('the bzip2 stream did not end')));
  }
}

/** A bzip2 decompressor; accepts concatenated streams (pbzip2), rejects truncated ones. */
export function bzip2Decompressor(mapError: (e: unknown) => Error): Transform {
  let total = 0;
  return new Bounded(new Bunzip2(), {
    slice: 64 * 1024,
    mapError: (e) =>
      // Its bit reader runs off the end of the input as `undefined[0]`.
      mapError(
        e instanceof TypeError
          ? new Error('the data ends before the end of the bzip2 stream', { cause: e })
          : e,
      ),
    onInput: (chunk) => (total += chunk.length),
    onEnd: () => (total === 0 ? mapError(new Error('the data is empty')) : undefined),
  });
}
