/**
 * Internal: the NAR walk of a directory for hashing, with small files read in batches by
 * {@link ReadPool} (on a helper thread when there is a spare core). The main thread lists
 * directories in canonical order ({@link readSortedDir}, shared with `dumpPath`), queues the
 * steps of the archive, writes the paths of regular files into batches, and then replays the
 * steps into the {@link NarWriter} as the batches come back. Lookahead is bounded by the pool's
 * slots and {@link MAX_STEPS}, so memory does not grow with the tree.
 *
 * Only hashing uses this: its chunks are consumed before `contents()` returns, so file contents
 * can be handed over as views of the shared slots, which are reused.
 */
import { type Dirent, readdirSync } from 'node:fs';

import type { NarWriter } from '../core/nar/writer.js';
import { acquirePool, CLAIMED, EXEC, FileStatus, MAX_FILES, PATH_BYTES, PUBLISHED, type ReadPool } from './_nar-read-pool.js';
import { listedSymlink, newWalk, streamFile, type Walk, walkAt } from './_nar-walk.js';

/** Queued steps at most: 64Ki keeps a directory-only stretch of the tree from growing the queue. */
const MAX_STEPS = 64 * 1024;
/** Batches published before helpers are started: a tree under ~512 files is done before a worker (~50 ms) is up. */
const START_AFTER = 2;
/** Steps between two turns of the event loop, whatever they are: 4096 steps of listing are a few ms. */
const YIELD_STEPS = 4096;

const enum Op {
  Dir,
  Entry,
  End,
  File,
  Link,
  Other,
}

/**
 * Paths and names are latin1 strings here: one char per byte, so they round-trip any bytes, and
 * JS string order is byte (memcmp) order. A listing of 100,000 names as strings costs a fraction
 * of one as Buffers (each its own ArrayBuffer to allocate, track and sweep: ~0.1 s of the main
 * thread on bench/nar-hash.ts (b)).
 */
const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

/** A directory's entries in NAR order (raw bytes, memcmp), with their types from the listing. */
function listSorted(dir: string): Array<Dirent<string>> {
  return readdirSync(bytes(dir), { encoding: 'latin1', withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
}

interface Step {
  op: Op;
  /** Parent directory path (File, Link, Other). */
  dir?: string;
  /** Entry name (Entry, File, Link, Other). */
  name?: string;
  /** Batch sequence number and index in it (File: the whole entry, name included). */
  batch?: number;
  index?: number;
}

interface Frame {
  dir: string;
  /** `dir` + '/' as bytes, copied in front of each file name of the directory. */
  prefix: Buffer;
  entries: Array<Dirent<string>>;
  i: number;
}

class Session {
  readonly #pool: ReadPool;
  readonly #walk: Walk;
  readonly #stack: Frame[] = [];
  #queue: Step[] = [];
  #head = 0;
  #steps = 0;
  readonly #base: number;
  /** The batch being filled with paths, how many it has, and where the next path goes. */
  #fill: number;
  #fillCount = 0;
  #fillBytes = 0;
  /** The batch being consumed, whether it has been read, and how far its contents are used. */
  #cons: number;
  #ready = false;
  #used = 0;
  /** A run of framed entries of the current batch not yet handed to the writer: [start, #used). */
  #runStart = 0;
  #runFirst: string | undefined;
  #runLast: string | undefined;
  readonly #paths: Buffer[] = [];
  readonly #meta: Float64Array[] = [];
  readonly #data: Buffer[] = [];

  constructor(pool: ReadPool, writer: NarWriter) {
    this.#pool = pool;
    this.#walk = newWalk(writer, { reuseBuffers: true });
    this.#base = Atomics.load(pool.ctl, PUBLISHED);
    this.#fill = this.#base;
    this.#cons = this.#base;
    for (let s = 0; s < pool.slots; s++) {
      this.#paths.push(pool.paths(s));
      this.#meta.push(pool.meta(s));
      this.#data.push(pool.data(s));
    }
  }

  async run(root: Buffer): Promise<void> {
    const w = this.#walk.writer;
    this.#enter(root.toString('latin1'));
    for (;;) {
      if (this.#head === this.#queue.length) {
        if (this.#stack.length === 0) break;
        this.#plan();
      }
      const step = this.#queue[this.#head++]!;
      // Directories and symlinks need no batch, so a stretch of them yields here (files yield per batch).
      if (++this.#steps % YIELD_STEPS === 0) await new Promise<void>((res) => setImmediate(res));
      if (step.op === Op.File) {
        // Most files: the batch is at hand and the entry is framed; no await (a promise per file was ~5 % of the main thread).
        if (step.batch !== this.#cons || !this.#ready) await this.#reach(step.batch!);
        if (!this.#framed(step)) await this.#file(step);
        continue;
      }
      this.#flushRun();
      switch (step.op) {
        case Op.Dir:
          w.directory();
          break;
        case Op.Entry:
          w.entry(bytes(step.name!));
          break;
        case Op.End:
          w.directoryEnd();
          break;
        case Op.Link: {
          const target = listedSymlink(bytes(`${step.dir!}/${step.name!}`));
          if (target) w.symlink(target);
          else await walkAt(this.#walk, bytes(`${step.dir!}/${step.name!}`));
          break;
        }
        case Op.Other:
          await walkAt(this.#walk, bytes(`${step.dir!}/${step.name!}`));
          break;
      }
    }
  }

  /** A file of the current (read) batch framed by the reader, right after the previous one: extends the run. */
  #framed(step: Step): boolean {
    const meta = this.#meta[step.batch! % this.#pool.slots]!;
    if (meta[2 * step.index!] !== FileStatus.Here) return false;
    if (this.#runFirst === undefined) {
      this.#runFirst = step.name!;
      this.#runStart = this.#used;
    }
    this.#runLast = step.name!;
    this.#used += meta[2 * step.index! + 1]!;
    return true;
  }

  /** A file the reader left to this thread: too big for a slot (streamed), or to look at again with lstat. */
  async #file(step: Step): Promise<void> {
    const slot = step.batch! % this.#pool.slots;
    const status = this.#meta[slot]![2 * step.index!]!;
    const n = this.#meta[slot]![2 * step.index! + 1]!;
    this.#flushRun();
    const w = this.#walk.writer;
    w.entry(bytes(step.name!));
    const path = bytes(`${step.dir!}/${step.name!}`);
    if (status === FileStatus.Stream || status === FileStatus.Stream + EXEC) {
      w.regular(status === FileStatus.Stream + EXEC, n);
      await streamFile(path, n, w, this.#walk.options);
      w.regularEnd();
    } else {
      await walkAt(this.#walk, path);
    }
  }

  /** Hands the pending run of framed entries to the writer (one hash update). */
  #flushRun(): void {
    if (this.#runFirst === undefined) return;
    const slot = this.#cons % this.#pool.slots;
    this.#walk.writer.framedEntries(this.#data[slot]!.subarray(this.#runStart, this.#used), bytes(this.#runFirst), bytes(this.#runLast!));
    this.#runFirst = undefined;
  }

  /** Moves consumption to batch `s` (the next one) and makes sure it has been read. */
  async #reach(s: number): Promise<void> {
    if (s !== this.#cons) {
      this.#flushRun();
      this.#cons = s;
      this.#used = 0;
      this.#ready = false;
      // The previous batch's slot is free again: plan further ahead, and let the event loop in.
      this.#plan();
      await new Promise<void>((res) => setImmediate(res));
    }
    if (s === this.#fill) this.#publish();
    const pool = this.#pool;
    if (pool.claim(s)) pool.readHere(s);
    else await pool.waitDone(s, () => this.#idle());
    this.#ready = true;
  }

  /** While a helper reads the batch we need: read a later one here, if any is waiting. */
  #idle(): boolean {
    this.#plan();
    const ctl = this.#pool.ctl;
    const c = Atomics.load(ctl, CLAIMED);
    if (c >= Atomics.load(ctl, PUBLISHED) || !this.#pool.claim(c)) return false;
    this.#pool.readHere(c);
    return true;
  }

  #enter(dir: string): void {
    this.#queue.push({ op: Op.Dir });
    this.#stack.push({ dir, prefix: bytes(`${dir}/`), entries: listSorted(dir), i: 0 });
  }

  /** Lists ahead and queues steps until the slots or the queue are full, or the tree is done. */
  #plan(): void {
    if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    while (this.#stack.length > 0 && this.#queue.length - this.#head < MAX_STEPS) {
      const top = this.#stack[this.#stack.length - 1]!;
      if (top.i === top.entries.length) {
        this.#stack.pop();
        this.#queue.push({ op: Op.End });
        continue;
      }
      const d = top.entries[top.i]!;
      if (d.isFile()) {
        if (!this.#addFile(top, d.name)) return;
      } else {
        this.#queue.push({ op: Op.Entry, name: d.name });
        if (d.isDirectory()) this.#enter(`${top.dir}/${d.name}`);
        else this.#queue.push({ op: d.isSymbolicLink() ? Op.Link : Op.Other, dir: top.dir, name: d.name });
      }
      top.i++;
    }
    // Nothing more to list: what is in the open batch has to go out.
    if (this.#stack.length === 0) this.#publish();
  }

  /** Puts a file's path into the open batch; false when no slot is free (consumption must catch up). */
  #addFile(frame: Frame, name: string): boolean {
    const len = frame.prefix.length + name.length + 1;
    if (this.#fillCount === MAX_FILES || this.#fillBytes + len > PATH_BYTES) this.#publish();
    if (this.#fill - this.#cons >= this.#pool.slots) return false;
    const paths = this.#paths[this.#fill % this.#pool.slots]!;
    let at = this.#fillBytes;
    paths.set(frame.prefix, at);
    at += frame.prefix.length;
    // A name is a few latin1 chars: a loop beats Buffer#write's argument checks.
    for (let k = 0; k < name.length; k++) paths[at++] = name.charCodeAt(k);
    paths[at++] = 0;
    this.#fillBytes = at;
    this.#queue.push({ op: Op.File, dir: frame.dir, name, batch: this.#fill, index: this.#fillCount++ });
    return true;
  }

  /** Publishes the open batch, if it has any file. */
  #publish(): void {
    if (this.#fillCount === 0) return;
    this.#pool.publish(this.#fill, this.#fillCount);
    this.#fill++;
    this.#fillCount = 0;
    this.#fillBytes = 0;
    if (this.#fill - this.#base === START_AFTER) this.#pool.start();
  }

  /** After a failure: wait out (or take back) every published batch so the slots are quiet for the next session. */
  async settle(): Promise<void> {
    const pool = this.#pool;
    const published = Atomics.load(pool.ctl, PUBLISHED);
    for (let s = this.#cons; s < published; s++) {
      if (pool.claim(s)) pool.markDone(s);
      else await pool.waitDone(s, () => false);
    }
  }
}

/** Writes the NAR of the directory `root` into `writer` (not ending it). */
export async function hashWalkDirectory(root: Buffer, writer: NarWriter): Promise<void> {
  const pool = acquirePool();
  const session = new Session(pool, writer);
  try {
    await session.run(root);
  } catch (e) {
    await session.settle();
    throw e;
  } finally {
    pool.hold(false);
  }
}
