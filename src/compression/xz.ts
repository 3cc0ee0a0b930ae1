/**
 * xz through node-liblzma (the system liblzma 5.4, streaming both ways).
 *
 * Two things node-liblzma does not do, done here:
 * - It pushes everything one input chunk decodes to, and xz expands up to about 6,800:1 (100 MiB
 *   of zeros is 15,388 bytes at -6). Input goes in 4 KiB slices, so one burst is at most ~27 MiB.
 * - With truncated input it ends quietly after a single LZMA_FINISH call that returned LZMA_OK.
 *   So the end of the input must be a valid xz stream footer (12 bytes ending in `YZ`, CRC32 of
 *   its middle 6 bytes first), optionally followed by zero padding in multiples of 4; liblzma
 *   has checked everything before it.
 */
import type { Duplex, Transform } from 'node:stream';
import { crc32 } from 'node:zlib';

import { check, createUnxz, createXz } from 'node-liblzma';

import { Bounded } from './_bounded.js';

const SLICE = 4 * 1024;
const FOOTER = 12;

/** Tracks the last 12 bytes before any trailing zero padding. */
class FooterTracker {
  #tail = Buffer.alloc(0);
  #zeros = 0;
  #total = 0;

  add(chunk: Buffer): void {
    this.#total += chunk.length;
    let last = chunk.length - 1;
    while (last >= 0 && chunk[last] === 0) last--;
    if (last < 0) {
      this.#zeros += chunk.length;
      return;
    }
    // The zeros seen so far were not padding: they belong before this chunk's data.
    const before =
      this.#zeros > 0
        ? Buffer.concat([this.#tail, Buffer.alloc(Math.min(this.#zeros, FOOTER))])
        : this.#tail;
    const joined = Buffer.concat([before, chunk.subarray(0, last + 1)]);
    this.#tail = joined.subarray(Math.max(0, joined.length - FOOTER));
    this.#zeros = chunk.length - 1 - last;
  }

  /** Why the input cannot be a whole xz stream, or undefined when its end looks right. */
  problem(): string | undefined {
    if (this.#total === 0) return 'the data is empty';
    const t = this.#tail;
    if (t.length < FOOTER || t[10] !== 0x59 || t[11] !== 0x5a || this.#zeros % 4 !== 0) {
      return 'the data ends before the end of the xz stream';
    }
    if (crc32(t.subarray(4, 10)) !== t.readUInt32LE(0)) return 'the xz stream footer is corrupt';
    return undefined;
  }
}

/** node-liblzma's typings replace Transform's `on` overloads with its own, so they no longer match `Duplex`. */
function asDuplex(s: object): Duplex {
  return s as Duplex;
}

/**
 * An xz compressor (preset 0–9, Nix uses 6). Errors go through `mapError`. `crc64` adds the
 * CRC64 check Nix's liblzma encoder writes (so files match real Nix's byte for byte).
 */
export function xzCompressor(level: number, mapError: (e: unknown) => Error, crc64 = false): Transform {
  const options = crc64 ? { preset: level, check: check.CRC64 } : { preset: level };
  return new Bounded(asDuplex(createXz(options)), { slice: 64 * 1024, mapError });
}

/** An xz decompressor that accepts concatenated streams and rejects truncated ones. */
export function xzDecompressor(mapError: (e: unknown) => Error): Transform {
  const footer = new FooterTracker();
  return new Bounded(asDuplex(createUnxz()), {
    slice: SLICE,
    mapError,
    onInput: (chunk) => footer.add(chunk),
    onEnd: () => {
      const problem = footer.problem();
      return problem === undefined ? undefined : mapError(new Error(problem));
    },
  });
}
