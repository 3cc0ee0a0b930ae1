/**
 * Where a NAR file waits between being written (compressed, hashed, verified) and being uploaded:
 * in memory while it is small, in a staging file once it grows past a limit. Most NARs are small,
 * and for them the disk round trip (write, read back, unlink) and its thread-pool hops cost more
 * than the upload itself; the limit keeps memory bounded however large a path is.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';

import type { CacheTransport } from './transport.js';

/**
 * 4 MiB: above the size of most NARs, and with copy's 8 uploads at once at most 32 MiB held in
 * memory; larger files go to disk (and from there to multipart uploads, 8 MiB parts).
 */
export const SPOOL_MEMORY_LIMIT = 4 * 1024 * 1024;

/** A sink that keeps what it is given for one later upload. */
export class Spool extends Writable {
  readonly #dir: string;
  readonly #limit: number;
  #chunks: Buffer[] = [];
  #size = 0;
  #file: { path: string; out: WriteStream } | undefined;

  /** `dir`: the transport's staging directory, used only once the limit is passed. */
  constructor(dir: string, limit = SPOOL_MEMORY_LIMIT) {
    super({ highWaterMark: 1 << 20 });
    this.#dir = dir;
    this.#limit = limit;
  }

  /** Bytes written so far. */
  get size(): number {
    return this.#size;
  }

  /** Whether the bytes spilled to a staging file. */
  get onDisk(): boolean {
    return this.#file !== undefined;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null) => void): void {
    this.#size += chunk.length;
    if (this.#file) {
      this.#file.out.write(chunk, done);
      return;
    }
    this.#chunks.push(chunk);
    if (this.#size <= this.#limit) return done();
    // Past the limit: everything so far goes to a file, and so does the rest.
    const path = join(this.#dir, `.strata-upload-${process.pid}-${Math.random().toString(36).slice(2)}`);
    const out = createWriteStream(path, { flags: 'wx', highWaterMark: 1 << 20 });
    // The file stream is not in the caller's pipeline: its errors (ENOSPC, a failed open) must
    // fail the spool, not go unheard as an uncaught 'error' event.
    out.on('error', (e) => this.destroy(e));
    this.#file = { path, out };
    const held = this.#chunks;
    this.#chunks = [];
    for (let i = 0; i < held.length - 1; i++) out.write(held[i]!);
    out.write(held.at(-1)!, done);
  }

  override _final(done: (e?: Error | null) => void): void {
    if (!this.#file) return done();
    this.#file.out.end(done);
  }

  override _destroy(e: Error | null, done: (e?: Error | null) => void): void {
    this.#file?.out.destroy();
    done(e);
  }

  /**
   * Uploads the finished file under `key`. From memory, each attempt of the transport reads a
   * fresh stream over the same chunks; from disk, the transport takes the staging file over.
   */
  async upload(transport: CacheTransport, key: string, contentType: string): Promise<void> {
    if (this.#file) {
      await transport.putLocalFile(key, this.#file.path, contentType);
      return;
    }
    const chunks = this.#chunks;
    // Not object mode: the HTTP layers see plain byte chunks.
    await transport.putFile(key, () => Readable.from(chunks, { objectMode: false }), contentType, this.#size);
  }

  /** Drops whatever is held (memory, or a staging file a failed upload left behind). */
  async dispose(): Promise<void> {
    this.#chunks = [];
    const file = this.#file;
    this.#file = undefined;
    if (file) {
      file.out.destroy();
      await rm(file.path, { force: true });
    }
  }
}
