/**
 * Streaming compression for NAR files, by the names Nix writes in a narinfo's `Compression:`.
 *
 * Every stream is a `Transform` that keeps memory flat whatever the data (see each adapter for
 * how), and every failure is a `StrataError`: `COMPRESSION_INVALID` for input that is not a
 * whole, valid stream of the method (garbage, truncated, empty, trailing junk), `UNSUPPORTED`
 * for a method strata cannot read or write, `COMPRESSION_FAILED` for a failing compressor.
 *
 * This module loads native code (liblzma, libzstd): CLI commands import it inside their action.
 */
import { PassThrough, type Transform } from 'node:stream';
import { constants as zlib, createBrotliCompress, createBrotliDecompress } from 'node:zlib';

import { isStrataError, StrataError } from '../core/error.js';
import { Bounded } from './_bounded.js';
import { bzip2Decompressor } from './bzip2.js';
import { xzCompressor, xzDecompressor } from './xz.js';
import { zstdCompressor, zstdDecompressor } from './zstd.js';

/** The methods strata reads; all but `bzip2` it also writes. */
export type CompressionMethod = 'none' | 'xz' | 'zstd' | 'bzip2' | 'br';

const METHODS: ReadonlySet<string> = new Set<CompressionMethod>([
  'none',
  'xz',
  'zstd',
  'bzip2',
  'br',
]);

/** True when strata can decompress `method`. */
export function isCompressionMethod(method: string): method is CompressionMethod {
  return METHODS.has(method);
}

/** Options for {@link compressor}. */
export interface CompressorOptions {
  /**
   * Method-specific level. The defaults are Nix 2.8's: xz preset 6, zstd 3, brotli quality 11.
   * xz -6 runs at 1.7 MB/s and brotli 11 at about 1 MB/s on this kind of machine, so pass a lower
   * level (xz 1, brotli 5) when speed matters more than size.
   */
  level?: number | undefined;
  /**
   * Write exactly the framing Nix 2.8 writes (through libarchive and liblzma): xz with a CRC64
   * check, zstd with no frame checksum. Needed for a narinfo's FileHash to match real Nix's.
   */
  nix?: boolean | undefined;
}

/** xz presets and brotli qualities go up to 9 and 11; zstd's usable levels to 19 (22 with --ultra). */
const LEVELS = { xz: [0, 9, 6], zstd: [1, 19, 3], br: [0, 11, 11] } as const;

function quote(s: string): string {
  const clean = JSON.stringify(s).slice(1, -1);
  return clean.length > 40 ? `${clean.slice(0, 37)}...` : clean;
}

/** One line from a library's error: its message, lower-case first letter, no trailing period. */
function describe(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const line = (text.split('\n')[0] ?? '').trim().replace(/\.$/, '');
  return line === '' ? 'unknown error' : line[0]!.toLowerCase() + line.slice(1);
}

function errorMapper(
  code: 'COMPRESSION_INVALID' | 'COMPRESSION_FAILED',
  action: string,
  method: string,
) {
  return (e: unknown): Error =>
    isStrataError(e)
      ? e
      : new StrataError(code, `Cannot ${action} '${method}' data: ${describe(e)}`, {
          value: method,
          cause: e,
        });
}

function level(method: keyof typeof LEVELS, options: CompressorOptions): number {
  const [min, max, fallback] = LEVELS[method];
  const l = options.level ?? fallback;
  if (!Number.isInteger(l) || l < min || l > max) {
    throw new StrataError(
      'UNSUPPORTED',
      `Cannot compress '${method}' data at level '${l}': levels go from ${min} to ${max}`,
      {
        value: String(l),
      },
    );
  }
  return l;
}

/**
 * A stream that compresses with `method`. `bzip2` (read-only in strata) and names strata does not
 * know throw `UNSUPPORTED`.
 *
 * @example await pipeline(narStream, compressor('zstd'), createWriteStream('x.nar.zst'));
 */
export function compressor(method: string, options: CompressorOptions = {}): Transform {
  const mapError = errorMapper('COMPRESSION_FAILED', 'compress', method);
  switch (method) {
    case 'none':
      return new PassThrough();
    case 'xz':
      return xzCompressor(level('xz', options), mapError, options.nix === true);
    case 'zstd':
      return zstdCompressor(level('zstd', options), mapError, options.nix !== true);
    case 'br':
      return new Bounded(
        createBrotliCompress({ params: { [zlib.BROTLI_PARAM_QUALITY]: level('br', options) } }),
        {
          slice: 64 * 1024,
          mapError,
        },
      );
    case 'bzip2':
      throw new StrataError(
        'UNSUPPORTED',
        "Cannot compress 'bzip2' data: strata reads bzip2 but does not write it",
        {
          value: method,
          hint: 'use zstd or xz',
        },
      );
    default:
      throw new StrataError(
        'UNSUPPORTED',
        `Cannot compress '${quote(method)}' data: unknown compression method`,
        { value: method },
      );
  }
}

/**
 * A stream that decompresses `method`. Input that is not exactly one or more whole streams of
 * that method fails with `COMPRESSION_INVALID`; unknown methods (`lz4`, `lzip`, …) throw
 * `UNSUPPORTED` here.
 *
 * @example await pipeline(createReadStream('x.nar.xz'), decompressor(narInfo.compression), narSink);
 */
export function decompressor(method: string): Transform {
  const mapError = errorMapper('COMPRESSION_INVALID', 'decompress', method);
  switch (method) {
    case 'none':
      return new PassThrough();
    case 'xz':
      return xzDecompressor(mapError);
    case 'zstd':
      return zstdDecompressor(mapError);
    case 'bzip2':
      return bzip2Decompressor(mapError);
    case 'br': {
      // Node's brotli honours backpressure itself; Bounded only maps errors and checks for input.
      let total = 0;
      return new Bounded(createBrotliDecompress(), {
        slice: 64 * 1024,
        mapError,
        onInput: (chunk) => (total += chunk.length),
        onEnd: () => (total === 0 ? mapError(new Error('the data is empty')) : undefined),
      });
    }
    default:
      throw new StrataError(
        'UNSUPPORTED',
        `Cannot decompress '${quote(method)}' data: unknown compression method`,
        {
          value: method,
        },
      );
  }
}
