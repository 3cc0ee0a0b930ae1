/**
 * The stream plumbing the compression adapters share: a Transform around a library's codec that
 * (1) turns every library error into one `StrataError`, and (2) keeps memory flat when the
 * library itself ignores backpressure, by feeding it small slices and waiting for the consumer
 * to read before feeding the next one.
 */
import { type Duplex, Transform, type TransformCallback } from 'node:stream';

/** How {@link Bounded} treats the codec it wraps. */
export interface BoundedOptions {
  /** Input is written to the codec at most this many bytes at a time. */
  slice: number;
  /** Turns whatever the codec threw or emitted into the error the consumer sees. */
  mapError: (e: unknown) => Error;
  /** Called with each input chunk before the codec sees it (for end-of-stream checks). */
  onInput?: ((chunk: Buffer) => void) | undefined;
  /** Called after the codec ended cleanly; an error it returns fails the stream. */
  onEnd?: (() => Error | undefined) | undefined;
}

/**
 * Wraps `inner` (a codec Transform). Output is bounded by `slice` × the codec's worst expansion
 * plus one high-water mark, whatever the codec does inside one write.
 */
export class Bounded extends Transform {
  readonly #inner: Duplex;
  readonly #options: BoundedOptions;
  #wantRead: (() => void) | undefined;
  #consumerFull = false;
  #failure: Error | undefined;
  #failed: ((e: Error) => void) | undefined;
  #flushing = false;
  #innerEnded = false;

  constructor(inner: Duplex, options: BoundedOptions) {
    super();
    this.#inner = inner;
    this.#options = options;
    inner.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) this.#consumerFull = true;
    });
    inner.on('error', (e: unknown) => this.#fail(e));
    // A codec that ends before we end it stopped reading: its stream ended and junk follows
    // (Node's brotli does that, and then never calls back the pending write).
    inner.on('end', () => {
      this.#innerEnded = true;
      if (!this.#flushing)
        this.#fail(new Error('the data continues after the end of the compressed stream'));
    });
  }

  #fail(e: unknown): void {
    if (this.#failure !== undefined) return;
    this.#failure = this.#options.mapError(e);
    this.#failed?.(this.#failure);
    this.destroy(this.#failure);
  }

  /** Resolves once the codec took `slice`; rejects when the codec failed. */
  #write(slice: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#failure !== undefined) return reject(this.#failure);
      this.#failed = reject;
      this.#inner.write(slice, (e) => (e ? reject(this.#options.mapError(e)) : resolve()));
    });
  }

  #consumerReady(): Promise<void> {
    if (!this.#consumerFull || this.destroyed) return Promise.resolve();
    return new Promise((resolve) => (this.#wantRead = resolve));
  }

  override _read(size: number): void {
    this.#consumerFull = false;
    const wake = this.#wantRead;
    this.#wantRead = undefined;
    wake?.();
    super._read(size);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.#options.onInput?.(chunk);
    const run = async (): Promise<void> => {
      for (let at = 0; at < chunk.length; at += this.#options.slice) {
        await this.#write(chunk.subarray(at, at + this.#options.slice));
        await this.#consumerReady();
      }
    };
    run().then(
      () => done(),
      (e: unknown) => done(this.#options.mapError(e)),
    );
  }

  override _flush(done: TransformCallback): void {
    if (this.#failure !== undefined) return done(this.#failure);
    this.#flushing = true;
    this.#failed = (e) => done(e);
    const finish = (): void => {
      if (this.#failure === undefined) done(this.#options.onEnd?.());
    };
    if (this.#innerEnded) return finish();
    this.#inner.once('end', finish);
    this.#inner.end();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#inner.destroy();
    const wake = this.#wantRead;
    this.#wantRead = undefined;
    wake?.();
    callback(error);
  }
}
