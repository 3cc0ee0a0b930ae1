/**
 * Internal: reads batches of small files for `hashPath`, on the calling thread or on a helper
 * worker thread, through one shared memory area.
 *
 * Why: hashing a tree of 100,000 small files is ~400,000 syscalls (open, fstat, read, close:
 * the ones Nix makes), and in Node each costs ~2 µs of JS and binding overhead on top of the
 * kernel's ~2 µs, so one thread cannot keep up with Nix (2.6 s vs 1.3 s, bench/nar-hash.ts).
 * A helper thread reads batches ahead while the main thread frames and hashes, and the main
 * thread reads batches itself whenever the helper has not claimed them yet (work stealing), so
 * both cores stay busy and a missing or slow helper only costs speed, never progress.
 *
 * Protocol (all counters only grow, so a session never confuses its batches with an older one's):
 * batch `s` lives in slot `s % slots`. The main thread writes its paths and bumps PUBLISHED;
 * whoever moves CLAIMED from `s` to `s + 1` (compare-and-swap) reads it and then stores `s + 1`
 * in the slot's DONE cell. The main thread consumes batches in order and reuses a slot only
 * after consuming it. Memory is fixed: slots × (64 KiB of paths + 1 MiB of contents).
 */
import * as fs from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

import { str } from '../core/nar/format.js';
import { OPEN_FLAGS } from './_nar-walk.js';

/** Batches in flight: 8 × 256 files keeps a helper ~10 ms ahead without holding much memory. */
export const SLOTS = 8;
/** Files per batch: 256 makes the per-batch cost (a wake-up, ~20 µs) negligible. */
export const MAX_FILES = 256;
/** Path bytes per batch: 64 KiB fits 256 paths of 250 bytes; longer ones end a batch early. */
export const PATH_BYTES = 64 * 1024;
/** Content bytes per batch; a file that does not fit is streamed by the main thread instead. */
export const DATA_BYTES = 1024 * 1024;

/**
 * Slots of a private pool: it has no helper, so batches are read only when the walk reaches
 * them and more slots would only hold paths listed ahead; 2 is the least the walk needs to list
 * the next batch while the current one is consumed (~2 MiB instead of ~8.6 MiB per concurrent hash).
 */
const PRIVATE_SLOTS = 2;

const META_BYTES = MAX_FILES * 16;
const SLOT_BYTES = PATH_BYTES + META_BYTES + DATA_BYTES;
/** Control cells of a pool with `slots` slots: 4 counters, then DONE and COUNT per slot. */
const ctlInts = (slots: number): number => 4 + 2 * slots;
const CTL_BYTES = 128;

/** Indices into the control array. */
export const PUBLISHED = 0;
export const CLAIMED = 1;
/** Batches read by helpers (for tests: proof the helper path runs). */
const HELPER_READS = 2;
const DONE = 4;

/** Status of a file in a batch's metadata (first of its two float64 cells). */
export const enum FileStatus {
  /** Its whole entry is in the slot's data area (second cell: its length). */
  Here = 0,
  /** A regular file too big for the slot: the main thread streams it (second cell: its size). */
  Stream = 2,
  /** Not a regular file any more, or unreadable: the main thread looks again with lstat. */
  Retry = 4,
}
/** Added to Stream when the owner-execute bit is set. */
export const EXEC = 1;

/** The layout numbers and framing pieces, passed to the reader (which may run in a worker with no imports). */
interface Layout {
  ctlBytes: number;
  slotBytes: number;
  pathBytes: number;
  maxFiles: number;
  dataBytes: number;
  openFlags: number;
  /** str("entry") str("(") str("name") */
  entryHead: Uint8Array;
  /** str("node") str("(") str("type") str("regular") */
  nodeRegular: Uint8Array;
  /** str("executable") str("") */
  executable: Uint8Array;
  /** str("contents") */
  contents: Uint8Array;
  /** str(")") str(")"): the end of the node, then of the entry */
  close2: Uint8Array;
}
const LAYOUT: Layout = {
  ctlBytes: CTL_BYTES,
  slotBytes: SLOT_BYTES,
  pathBytes: PATH_BYTES,
  maxFiles: MAX_FILES,
  dataBytes: DATA_BYTES,
  openFlags: OPEN_FLAGS,
  entryHead: Buffer.concat([str('entry'), str('('), str('name')]),
  nodeRegular: Buffer.concat([str('node'), str('('), str('type'), str('regular')]),
  executable: Buffer.concat([str('executable'), str('')]),
  contents: str('contents'),
  close2: Buffer.concat([str(')'), str(')')]),
};

/**
 * The four calls a batch makes per file. `fstat` returns an array with the mode at [1] and the
 * size at [8] (Node's stat layout), or undefined when the fd cannot be stat'ed.
 */
export interface FileCalls {
  /** True when these are Node's internal fs binding, false for the public `fs` API. */
  fast: boolean;
  open(path: Buffer, flags: number): number;
  fstat(fd: number): ArrayLike<number> | undefined;
  read(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  close(fd: number): void;
}

/**
 * The per-file calls, from Node's internal fs binding when it provably behaves as the public
 * API does, else from the public API. Why: per file, `fs.fstatSync` builds a Stats object with
 * four Dates (~8,700 instructions, measured with callgrind on Node 20.20) and the public wrappers
 * validate their arguments (~3,800 more); with the binding a file costs ~7,700 instructions of
 * user space instead of ~20,200 (the four syscalls cost the same). We call the binding exactly as
 * the public functions of this Node do (checked on their source text), then probe it against the
 * public API on a real file; anything unexpected selects the public API, which is always correct.
 * Self-contained (its source text is the worker's code too): no imports, no closures.
 */
export function fileCalls(fsm: typeof fs, allowFast: boolean): FileCalls {
  const scratch = new Float64Array(18);
  const plain: FileCalls = {
    fast: false,
    open: (path, flags) => fsm.openSync(path, flags),
    fstat(fd) {
      const st = fsm.fstatSync(fd);
      scratch[1] = st.mode;
      scratch[8] = st.size;
      return scratch;
    },
    read: (fd, buf, offset, length, position) => fsm.readSync(fd, buf, offset, length, position),
    close: (fd) => fsm.closeSync(fd),
  };
  // process.binding is deprecated (DEP0111): with --pending-deprecation it would warn the user.
  const flags = `${process.execArgv.join(' ')} ${process.env['NODE_OPTIONS'] ?? ''}`;
  if (!allowFast || flags.includes('-deprecation')) return plain;
  try {
    const text = (f: unknown): string => Function.prototype.toString.call(f);
    const same =
      text(fsm.openSync).includes('return binding.open(') &&
      text(fsm.fstatSync).includes('binding.fstat(fd, options.bigint, undefined, false)') &&
      text(fsm.readSync).includes('return binding.read(fd, buffer, offset, length, position)') &&
      text(fsm.closeSync).includes('binding.close(fd)');
    const b = same ? (process as unknown as { binding(name: string): Record<string, (...a: unknown[]) => unknown> }).binding('fs') : undefined;
    if (!b) return plain;
    const fast: FileCalls = {
      fast: true,
      open: (path, flags) => b.open!(path, flags, 0o666) as number,
      fstat: (fd) => b.fstat!(fd, false, undefined, false) as Float64Array | undefined,
      read: (fd, buf, offset, length, position) => b.read!(fd, buf, offset, length, position) as number,
      close: (fd) => void b.close!(fd),
    };
    // The probe: the node binary is a regular file every process can read.
    const probe = Buffer.from(process.execPath);
    const fd = fast.open(probe, fsm.constants.O_RDONLY);
    try {
      const st = fsm.fstatSync(fd);
      const raw = fast.fstat(fd);
      const mine = Buffer.alloc(64);
      const theirs = Buffer.alloc(64);
      const ok =
        raw !== undefined &&
        raw[1] === st.mode &&
        raw[8] === st.size &&
        fast.read(fd, mine, 0, 64, 0) === fsm.readSync(fd, theirs, 0, 64, 0) &&
        mine.equals(theirs);
      if (!ok) return plain;
    } finally {
      fast.close(fd);
    }
    return fast;
  } catch {
    return plain;
  }
}

/**
 * Reads the `count` NUL-terminated paths of `slot` and writes, for each regular file that fits,
 * its whole directory entry as NAR bytes (entry, name, node, contents, padding, both closing
 * parens) into the slot's data area, back to back: a run of such files is hashed with one
 * update. Metadata per file: [status, bytes] (Here: bytes of its entry; Stream: file size).
 * Self-contained (its source text is the worker's code too): no imports, no closures.
 */
function readBatch(io: FileCalls, sab: SharedArrayBuffer, slot: number, count: number, L: Layout): void {
  const base = L.ctlBytes + slot * L.slotBytes;
  const paths = Buffer.from(sab, base, L.pathBytes);
  const meta = new Float64Array(sab, base + L.pathBytes, L.maxFiles * 2);
  const data = Buffer.from(sab, base + L.pathBytes + L.maxFiles * 16, L.dataBytes);
  let p = 0;
  let used = 0;
  for (let i = 0; i < count; i++) {
    const end = paths.indexOf(0, p);
    const path = paths.subarray(p, end);
    const nameAt = paths.lastIndexOf(0x2f, end) + 1;
    const nameLen = end - nameAt;
    p = end + 1;
    meta[2 * i] = 4; // Retry, unless all goes well
    meta[2 * i + 1] = 0;
    let fd: number;
    try {
      fd = io.open(path, L.openFlags);
    } catch {
      continue;
    }
    try {
      const st = io.fstat(fd);
      // S_IFMT, S_IFREG: not a regular file any more.
      if (st === undefined || (st[1]! & 0o170000) !== 0o100000) continue;
      const exec = (st[1]! & 0o100) !== 0;
      const size = st[8]!;
      const head = L.entryHead.length + 8 + nameLen + ((8 - (nameLen % 8)) % 8) + L.nodeRegular.length + (exec ? L.executable.length : 0) + L.contents.length + 8;
      const total = head + size + ((8 - (size % 8)) % 8) + L.close2.length;
      if (total > L.dataBytes - used) {
        meta[2 * i] = exec ? 3 : 2;
        meta[2 * i + 1] = size;
        continue;
      }
      // Byte by byte below: names and paddings are a few bytes, and Buffer's fill/copy/writeUInt32LE
      // cost more in argument checks than in copying.
      let at = used;
      data.set(L.entryHead, at);
      at += L.entryHead.length;
      data[at] = nameLen & 0xff;
      data[at + 1] = nameLen >>> 8;
      for (let k = 2; k < 8; k++) data[at + k] = 0;
      at += 8;
      for (let k = nameAt; k < end; k++) data[at++] = paths[k]!;
      while (at % 8 !== 0) data[at++] = 0;
      data.set(L.nodeRegular, at);
      at += L.nodeRegular.length;
      if (exec) {
        data.set(L.executable, at);
        at += L.executable.length;
      }
      data.set(L.contents, at);
      at += L.contents.length;
      // size ≤ dataBytes (1 MiB) here: three bytes of the u64 are enough, the rest are zero.
      data[at] = size & 0xff;
      data[at + 1] = (size >>> 8) & 0xff;
      data[at + 2] = size >>> 16;
      for (let k = 3; k < 8; k++) data[at + k] = 0;
      at += 8;
      let got = 0;
      while (got < size) {
        const n = io.read(fd, data, at + got, size - got, got);
        if (n === 0) break;
        got += n;
      }
      if (got < size) continue; // it shrank: let the main thread look again
      at += size;
      while (at % 8 !== 0) data[at++] = 0;
      data.set(L.close2, at);
      at += L.close2.length;
      meta[2 * i] = 0;
      meta[2 * i + 1] = at - used;
      used = at;
    } catch {
      // Unreadable: the main thread's retry reports the error, in archive order.
    } finally {
      try {
        io.close(fd);
      } catch {
        // a close error on a read-only fd loses nothing
      }
    }
  }
}

/** The helper's loop: claim the next published batch, read it, mark it done; sleep when none. */
function helperMain(req: NodeJS.Require, read: typeof readBatch, calls: typeof fileCalls): void {
  const { workerData } = req('node:worker_threads') as typeof import('node:worker_threads');
  const { sab, L, slots, ctlInts, fast } = workerData as { sab: SharedArrayBuffer; L: Layout; slots: number; ctlInts: number; fast: boolean };
  const io = calls(req('node:fs') as typeof fs, fast);
  const ctl = new Int32Array(sab, 0, ctlInts);
  for (;;) {
    const s = Atomics.load(ctl, 1);
    const pub = Atomics.load(ctl, 0);
    if (s >= pub) {
      Atomics.wait(ctl, 0, pub);
      continue;
    }
    if (Atomics.compareExchange(ctl, 1, s, s + 1) !== s) continue;
    const slot = s % slots;
    read(io, sab, slot, Atomics.load(ctl, 4 + slots + slot), L);
    Atomics.add(ctl, 2, 1);
    Atomics.store(ctl, 4 + slot, s + 1);
    Atomics.notify(ctl, 4 + slot);
  }
}

/** The shared area and its helpers; one session uses it at a time. */
export class ReadPool {
  /** A private pool (another hash holds the shared one) has no helpers. */
  readonly private: boolean;
  /** Batches in flight; batch `s` lives in slot `s % slots`. */
  readonly slots: number;
  readonly sab: SharedArrayBuffer;
  readonly ctl: Int32Array;
  busy = false;
  #helpers: Worker[] = [];
  /** Resolves when every helper started is running. */
  online: Promise<unknown> = Promise.resolve();
  #started = false;
  /** Resolves when a helper dies: a batch it claimed will never be marked done. */
  readonly #dead: Promise<void>;
  #die!: () => void;
  #alive = true;

  /** The per-file calls of this thread's reads; helpers use the same kind. */
  readonly io: FileCalls;

  constructor(isPrivate = false, io: FileCalls = (mainCalls ??= fileCalls(fs, true))) {
    this.private = isPrivate;
    this.io = io;
    this.slots = isPrivate ? PRIVATE_SLOTS : SLOTS;
    this.sab = new SharedArrayBuffer(CTL_BYTES + this.slots * SLOT_BYTES);
    this.ctl = new Int32Array(this.sab, 0, ctlInts(this.slots));
    this.#dead = new Promise((res) => (this.#die = res));
  }

  /** Where slot `slot`'s paths go (the main thread writes them). */
  paths(slot: number): Buffer {
    return Buffer.from(this.sab, CTL_BYTES + slot * SLOT_BYTES, PATH_BYTES);
  }
  meta(slot: number): Float64Array {
    return new Float64Array(this.sab, CTL_BYTES + slot * SLOT_BYTES + PATH_BYTES, MAX_FILES * 2);
  }
  data(slot: number): Buffer {
    return Buffer.from(this.sab, CTL_BYTES + slot * SLOT_BYTES + PATH_BYTES + META_BYTES, DATA_BYTES);
  }

  /** Makes batch `s` (its `count` paths already written) available to readers. */
  publish(s: number, count: number): void {
    Atomics.store(this.ctl, 4 + this.slots + (s % this.slots), count);
    Atomics.store(this.ctl, PUBLISHED, s + 1);
    Atomics.notify(this.ctl, PUBLISHED);
  }

  /** Claims batch `s` if nobody has; true when the caller must read it. */
  claim(s: number): boolean {
    return Atomics.compareExchange(this.ctl, CLAIMED, s, s + 1) === s;
  }

  /** Reads batch `s` on this thread (after a successful claim). */
  readHere(s: number): void {
    const slot = s % this.slots;
    readBatch(this.io, this.sab, slot, Atomics.load(this.ctl, 4 + this.slots + slot), LAYOUT);
    Atomics.store(this.ctl, DONE + slot, s + 1);
  }

  /** Marks a claimed batch done without reading it (a failed session giving its batches back). */
  markDone(s: number): void {
    Atomics.store(this.ctl, DONE + (s % this.slots), s + 1);
  }

  /**
   * Waits until batch `s`, claimed by a helper, is done; reads it here if the helper died.
   * Meanwhile the caller's `idle` work runs (reading later batches) as long as it finds some.
   */
  async waitDone(s: number, idle: () => boolean): Promise<void> {
    const cell = DONE + (s % this.slots);
    for (;;) {
      // Wait on the value seen *before* deciding to wait: a `done` stored since makes waitAsync return at once.
      const seen = Atomics.load(this.ctl, cell);
      if (seen === s + 1) return;
      if (idle()) continue;
      if (!this.#alive) {
        this.readHere(s);
        return;
      }
      const r = waitAsync(this.ctl, cell, seen);
      if (r.async) await Promise.race([r.value, this.#dead]);
    }
  }

  /** Starts the helpers (once); until they are up the main thread reads every batch itself. */
  start(): void {
    if (this.#started || this.private) return;
    this.#started = true;
    // One helper per spare core, at most 3: the main thread is busy framing and hashing too.
    const n = Math.min(3, availableParallelism() - 1);
    // `__name`: transpilers that keep function names (tsx, vitest) may wrap inner functions in it.
    const source = `const __name = (f) => f;\nconst readBatch = ${readBatch.toString()};\nconst fileCalls = ${fileCalls.toString()};\n(${helperMain.toString()})(require, readBatch, fileCalls);`;
    for (let i = 0; i < n; i++) {
      try {
        const w = new Worker(source, { eval: true, workerData: { sab: this.sab, L: LAYOUT, slots: this.slots, ctlInts: ctlInts(this.slots), fast: this.io.fast } });
        // A helper that fails only costs speed: stop them all, then the main thread reads what is left.
        w.on('error', () => undefined);
        w.on('exit', () => void this.#stopAll());
        if (!this.busy) w.unref();
        this.#helpers.push(w);
      } catch {
        break;
      }
    }
    if (this.#helpers.length === 0) this.#alive = false;
    this.online = Promise.all(this.#helpers.map((w) => new Promise((res) => w.once('online', res))));
  }

  async #stopAll(): Promise<void> {
    if (!this.#alive) return;
    const helpers = this.#helpers;
    this.#helpers = [];
    await Promise.all(helpers.map((h) => h.terminate()));
    // Nobody else writes the slots now, so batches they claimed can be read here.
    this.#alive = false;
    this.#die();
  }

  /** While a session runs, the helpers keep the event loop alive (Atomics.waitAsync does not). */
  hold(on: boolean): void {
    this.busy = on;
    for (const w of this.#helpers) {
      if (on) w.ref();
      else w.unref();
    }
  }
}

/** `Atomics.waitAsync` (Node ≥ 16; not in the ES2023 lib typings). */
const waitAsync = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<unknown> | string } }).waitAsync;

let shared: ReadPool | undefined;
/** The main thread's per-file calls, chosen once. */
let mainCalls: FileCalls | undefined;

/** Batches the shared pool's helpers have read so far, and a promise that its helpers are up (for tests). */
export function helperStats(): { batches: number; online: Promise<unknown> } {
  return { batches: shared ? Atomics.load(shared.ctl, HELPER_READS) : 0, online: shared?.online ?? Promise.resolve() };
}

/** The process's pool, or a private one without helpers when another hash is using it. */
export function acquirePool(): ReadPool {
  shared ??= new ReadPool();
  if (!shared.busy) {
    shared.hold(true);
    return shared;
  }
  const own = new ReadPool(true);
  own.busy = true;
  return own;
}
