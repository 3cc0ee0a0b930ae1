/**
 * Structure-aware mutations for the fuzzers: valid inputs (the shared vectors, real Nix's
 * output) are damaged the ways an attacker or a broken disk would: bit flips, inserted and
 * deleted runs, duplicated and spliced regions, 64-bit length fields set to edge values, and
 * format tokens (`entry`, `..`, `StorePath: `, `Derive(`) dropped in at random places.
 */
import fc from 'fast-check';

export type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; byte: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; n: number }
  | { kind: 'dup'; at: number; n: number; to: number }
  | { kind: 'u64'; at: number; value: bigint }
  | { kind: 'truncate'; at: number }
  | { kind: 'splice'; other: number; from: number; n: number; to: number }
  | { kind: 'token'; at: number; token: number };

const EDGE_U64 = [
  0n,
  1n,
  7n,
  8n,
  9n,
  255n,
  256n,
  4095n,
  4096n,
  2n ** 31n,
  2n ** 32n - 1n,
  2n ** 32n,
  2n ** 53n - 1n,
  2n ** 53n,
  2n ** 63n,
  2n ** 64n - 1n,
];

/** An arbitrary list of mutations; `tokens` is the format's dictionary. */
export function mutations(tokens: readonly Uint8Array[], maxLength = 4): fc.Arbitrary<Mutation[]> {
  const at = fc.nat();
  const m: fc.Arbitrary<Mutation> = fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at, bit: fc.nat(7) }),
    fc.record({
      kind: fc.constant('set' as const),
      at,
      byte: fc.oneof(
        fc.constantFrom(0, 0x0a, 0x0d, 0x22, 0x2f, 0x2e, 0x5c, 0xff, 0x80, 0x3a, 0x20),
        fc.nat(255),
      ),
    }),
    fc.record({
      kind: fc.constant('insert' as const),
      at,
      bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
    }),
    fc.record({ kind: fc.constant('delete' as const), at, n: fc.integer({ min: 1, max: 64 }) }),
    fc.record({
      kind: fc.constant('dup' as const),
      at,
      n: fc.integer({ min: 1, max: 128 }),
      to: fc.nat(),
    }),
    fc.record({ kind: fc.constant('u64' as const), at, value: fc.constantFrom(...EDGE_U64) }),
    fc.record({ kind: fc.constant('truncate' as const), at }),
    fc.record({
      kind: fc.constant('splice' as const),
      other: fc.nat(),
      from: fc.nat(),
      n: fc.integer({ min: 1, max: 256 }),
      to: fc.nat(),
    }),
    fc.record({
      kind: fc.constant('token' as const),
      at,
      token: fc.nat(Math.max(0, tokens.length - 1)),
    }),
  );
  return fc.array(m, { minLength: 1, maxLength });
}

/** Applies mutations to a copy of `input`; `corpus` feeds splices, `tokens` token insertions. */
export function mutate(
  input: Uint8Array,
  ms: readonly Mutation[],
  corpus: readonly Uint8Array[],
  tokens: readonly Uint8Array[],
  align = 1,
): Buffer {
  let b = Buffer.from(input);
  const pos = (at: number, extra = 0): number => at % (b.length + extra || 1);
  for (const m of ms) {
    switch (m.kind) {
      case 'flip':
        if (b.length) b[pos(m.at)]! ^= 1 << m.bit;
        break;
      case 'set':
        if (b.length) b[pos(m.at)] = m.byte;
        break;
      case 'insert': {
        const p = pos(m.at, 1);
        b = Buffer.concat([b.subarray(0, p), m.bytes, b.subarray(p)]);
        break;
      }
      case 'delete': {
        const p = pos(m.at);
        b = Buffer.concat([b.subarray(0, p), b.subarray(p + m.n)]);
        break;
      }
      case 'dup': {
        const p = pos(m.at);
        const piece = Buffer.from(b.subarray(p, p + m.n));
        const to = pos(m.to, 1);
        b = Buffer.concat([b.subarray(0, to), piece, b.subarray(to)]);
        break;
      }
      case 'u64': {
        // Length fields sit on 8-byte boundaries in a NAR; elsewhere this just scribbles 8 bytes.
        if (b.length < 8) break;
        const p = Math.min(b.length - 8, pos(m.at) - (pos(m.at) % align));
        b.writeBigUInt64LE(m.value, p);
        break;
      }
      case 'truncate':
        b = b.subarray(0, pos(m.at));
        break;
      case 'splice': {
        const other = corpus[m.other % corpus.length];
        if (!other || other.length === 0) break;
        const from = m.from % other.length;
        const to = pos(m.to, 1);
        b = Buffer.concat([b.subarray(0, to), other.subarray(from, from + m.n), b.subarray(to)]);
        break;
      }
      case 'token': {
        const t = tokens[m.token % (tokens.length || 1)];
        if (!t) break;
        let p = pos(m.at, 1);
        p -= p % align;
        b = Buffer.concat([b.subarray(0, p), t, b.subarray(p)]);
        break;
      }
    }
  }
  return b;
}

/** Mutated inputs drawn from a corpus of valid ones (the first element is the corpus index). */
export function mutated(
  corpus: readonly Uint8Array[],
  tokens: readonly Uint8Array[],
  align = 1,
): fc.Arbitrary<Buffer> {
  return fc
    .tuple(fc.nat(corpus.length - 1), mutations(tokens))
    .map(([i, ms]) => mutate(corpus[i]!, ms, corpus, tokens, align));
}
