/**
 * zstd through zstd-napi (libzstd 1.5, compiled in).
 *
 * Compression uses its `CompressStream`. Decompression drives the native `DCtx` directly:
 * zstd-napi's `DecompressStream` pushes everything one input chunk decodes to, and zstd expands
 * up to about 32,000:1 (100 MiB of zeros is 3,239 bytes at -19), so a 64 KiB chunk could become
 * 2 GiB in memory. Here decoding pauses after each 128 KiB output buffer the consumer has not
 * read yet, so memory stays at one buffer plus the high-water mark.
 */
import { Transform, type TransformCallback } from 'node:stream';

import { CompressStream } from 'zstd-napi';
import binding from 'zstd-napi/binding.js';

import { Bounded } from './_bounded.js';

/** libzstd's recommended output buffer (`ZSTD_DStreamOutSize`, 128 KiB). */
const OUT_SIZE = binding.dStreamOutSize();

class ZstdDecompressor extends Transform {
  readonly #dctx = new binding.DCtx();
  readonly #mapError: (e: unknown) => Error;
  /** True while a frame has started and not ended (ending there means truncation). */
  #inFrame = false;
  #sawInput = false;
  /** Continues the current chunk once the consumer reads again. */
  #resume: (() => void) | undefined;

  constructor(mapError: (e: unknown) => Error) {
    super();
    this.#mapError = mapError;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    if (chunk.length > 0) this.#sawInput = true;
    let src = chunk;
    const step = (): void => {
      try {
        for (;;) {
          const dst = Buffer.allocUnsafe(OUT_SIZE);
          const [ret, produced, consumed] = this.#dctx.decompressStream(dst, src);
          src = src.subarray(consumed);
          const more = produced > 0 ? this.push(dst.subarray(0, produced)) : true;
          // Finished with this chunk: input used up and libzstd has nothing buffered.
          if (src.length === 0 && (produced < dst.length || ret === 0)) {
            this.#inFrame = ret !== 0;
            done();
            return;
          }
          if (!more) {
            this.#resume = step;
            return;
          }
        }
      } catch (e) {
        done(this.#mapError(e));
      }
    };
    step();
  }

  override _read(size: number): void {
    const resume = this.#resume;
    this.#resume = undefined;
    if (resume !== undefined) resume();
    else super._read(size);
  }

  override _flush(done: TransformCallback): void {
    if (!this.#sawInput) return done(this.#mapError(new Error('the data is empty')));
    if (this.#inFrame)
      return done(this.#mapError(new Error('the data ends in the middle of a zstd frame')));
    done();
  }
}

/**
 * A zstd compressor (level 1–19, Nix's default is 3). Like the zstd CLI it adds the frame
 * checksum (4 bytes), so corruption shows up when decompressing, not only at the NAR hash check;
 * `checksum: false` writes what Nix 2.8 (libarchive) writes.
 */
export function zstdCompressor(level: number, mapError: (e: unknown) => Error, checksum = true): Transform {
  return new Bounded(new CompressStream({ compressionLevel: level, checksumFlag: checksum }), {
    slice: 64 * 1024,
    mapError,
  });
}

/** A zstd decompressor; accepts concatenated frames, rejects truncated ones. */
export function zstdDecompressor(mapError: (e: unknown) => Error): Transform {
  return new ZstdDecompressor(mapError);
}
