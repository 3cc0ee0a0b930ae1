/** Deterministic randomness for generators: the same seed gives the same store, run after run. */
import { nix32Encode } from '../../src/core/hash.js';

/** mulberry32: a tiny, fast 32-bit PRNG (uniform in [0, 1)). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A standard normal deviate (Box–Muller). */
export function normal(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/** Log-normal with the given median; sigma 1.2 gives the long tail of real store paths. */
export function logNormal(rand: () => number, median: number, sigma = 1.2): number {
  return median * Math.exp(sigma * normal(rand));
}

/** A random nix32 hash part (20 bytes, 32 characters). */
export function hashPart(rand: () => number): string {
  const b = new Uint8Array(20);
  for (let i = 0; i < 20; i++) b[i] = Math.floor(rand() * 256);
  return nix32Encode(b);
}

/** Fills `buf` with pseudo-random bytes (incompressible enough for NAR and copy timings). */
export function fill(rand: () => number, buf: Buffer): Buffer {
  for (let i = 0; i + 4 <= buf.length; i += 4)
    buf.writeUInt32LE(Math.floor(rand() * 4294967296), i);
  for (let i = buf.length - (buf.length % 4); i < buf.length; i++)
    buf[i] = Math.floor(rand() * 256);
  return buf;
}
