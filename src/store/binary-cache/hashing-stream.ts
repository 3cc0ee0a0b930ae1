/**
 * A pass-through that hashes and counts what flows through it, and optionally fails at the end
 * when the bytes are not the ones expected. Used on both sides of a NAR transfer: the compressed
 * file (FileHash/FileSize) and the NAR itself (NarHash/NarSize).
 */
import { createHash, type Hash as NodeHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

import { Hash } from '../../core/hash.js';

/** What a {@link HashingStream} must see, and how to say it did not. */
export interface Expectation {
  hash?: Hash | undefined;
  size?: number | undefined;
  /** The error for a mismatch, given what was seen; the stream fails with it. */
  fail: (what: 'hash' | 'size', got: string) => Error;
}

/** sha256 and byte count of a stream, checked at its end against an {@link Expectation}. */
export class HashingStream extends Transform {
  readonly #hash: NodeHash = createHash('sha256');
  readonly #expect: Expectation | undefined;
  #size = 0;
  #digest: Hash | undefined;

  constructor(expect?: Expectation) {
    super();
    this.#expect = expect;
  }

  /** Bytes seen so far. */
  get size(): number {
    return this.#size;
  }

  /** The sha256 of everything, once the stream ended. */
  get hash(): Hash {
    if (!this.#digest) throw new Error('HashingStream: the stream has not ended');
    return this.#digest;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.#size += chunk.length;
    // Fail early on a size overrun: a hostile server cannot make us store more than declared.
    const want = this.#expect?.size;
    if (want !== undefined && this.#size > want) return done(this.#expect!.fail('size', `more than ${want} bytes`));
    this.#hash.update(chunk);
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    this.#digest = new Hash('sha256', this.#hash.digest());
    const e = this.#expect;
    if (e?.size !== undefined && this.#size !== e.size) return done(e.fail('size', String(this.#size)));
    if (e?.hash !== undefined && !this.#digest.equals(e.hash)) return done(e.fail('hash', this.#digest.toNix32()));
    done();
  }
}
