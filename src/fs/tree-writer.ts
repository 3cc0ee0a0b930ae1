/**
 * `TreeWriter`: creates a restore's file system nodes on libuv's thread pool, through the addon in
 * native/ (native/tree_writer.c), while the main thread goes on parsing and hashing. A restore
 * describes each node (mkdir, a file's open, writes and close, a symlink, a finished directory's
 * seal) into a buffer of operations; full buffers are queued, and one pool thread runs them in
 * order. Every node gets Nix store metadata: files the mode given, directories 0555, mtime 1.
 *
 * The calls are deferred: a failure surfaces at the next {@link TreeWriter.settle} (or
 * {@link TreeWriter.ready}), as Node's fs would have thrown it. Whoever owns the writer settles it
 * before reading, moving or removing what it made.
 */
import { StrataError } from '../core/error.js';

type Native = typeof import('strata-native');
type Handle = import('strata-native').TreeWriterHandle;

const OP_MKDIR = 1;
const OP_OPEN = 2;
const OP_WRITE = 3;
const OP_CLOSE = 4;
const OP_SYMLINK = 5;
const OP_SEAL = 6;
const OP_LOCK = 7;

/**
 * Open files at once: the addon's slot table (SLOTS in tree_writer.c). Each restore holds at most
 * one file open, so a writer serves up to this many restores at once ({@link TreeWriter.MAX_RESTORES}).
 */
const SLOTS = 256;
/**
 * Size of an operation buffer: 256 KiB holds the ~2,500 operations of ~100 small store paths, so
 * the pool thread is handed work ~10 times per 1,000 paths, not per path.
 */
const BUFFER_SIZE = 256 * 1024;
/**
 * Bytes queued and not yet run above which {@link TreeWriter.ready} waits, until half of them
 * have run: memory stays flat, and the pool thread never runs dry while the producer waits.
 */
const QUEUED_LIMIT = 4 * 1024 * 1024;
/** How often a waiting producer looks again: ~10 operation buffers' worth of work. */
const POLL_MS = 1;
/**
 * Finished buffers kept for reuse, as many as may be queued: a new 256 KiB buffer is fresh
 * memory whose first touch faults in each of its pages.
 */
const SPARE_BUFFERS = QUEUED_LIMIT / BUFFER_SIZE;

let native: Native | null | undefined;

/** Every slot free, the lowest handed out first. */
const allSlots = (): number[] => Array.from({ length: SLOTS }, (_, i) => SLOTS - 1 - i);

export class TreeWriter {
  /** Restores that may share one writer at a time. */
  static readonly MAX_RESTORES = SLOTS;

  private buf: Buffer = Buffer.allocUnsafeSlow(BUFFER_SIZE);
  private len = 0;
  /** Buffers pushed and not known to be done, with the running total of bytes at each one's end. */
  private readonly held: Array<{ buf: Buffer; end: number }> = [];
  private pushed = 0;
  private readonly spare: Buffer[] = [];
  private freeSlots = allSlots();
  /** LOCK operations queued since the last {@link takeLocks}. */
  private locksQueued = 0;

  private constructor(
    private readonly addon: Native,
    private readonly handle: Handle,
    private readonly queuedLimit: number,
  ) {}

  /**
   * A writer, or undefined where the addon cannot be loaded (callers then make the calls
   * themselves). `queuedLimit`: bytes queued above which {@link ready} waits (default 4 MiB).
   */
  static async open({ queuedLimit = QUEUED_LIMIT }: { queuedLimit?: number } = {}): Promise<TreeWriter | undefined> {
    if (native === undefined) {
      try {
        native = await import('strata-native');
      } catch {
        native = null;
      }
    }
    return native ? new TreeWriter(native, native.treeWriter(), queuedLimit) : undefined;
  }

  mkdir(path: Buffer): void {
    const at = this.reserve(4 + 4 + path.length + 1);
    this.u32(at, OP_MKDIR);
    this.path(at + 4, path);
  }

  /** Opens a new file (exclusive, no symlink followed) with its final `mode`; returns its slot. */
  openFile(path: Buffer, mode: number): number {
    const slot = this.freeSlots.pop();
    if (slot === undefined) throw new StrataError('WRITER_FULL', `Cannot open '${path.toString()}': a tree writer serves at most ${SLOTS} restores at once`, { value: path.toString() });
    const at = this.reserve(4 + 12 + path.length + 1);
    this.u32(at, OP_OPEN);
    this.u32(at + 4, slot);
    this.u32(at + 8, mode);
    this.path(at + 12, path);
    return slot;
  }

  /** Writes `bytes[start..end)` to the file in `slot` (copied: the caller may reuse `bytes`). */
  write(slot: number, bytes: Uint8Array, start: number, end: number): void {
    while (start < end) {
      // Large contents go in pieces of at most one buffer, so an operation always fits.
      const n = Math.min(end - start, BUFFER_SIZE - 12);
      const at = this.reserve(12 + n);
      this.u32(at, OP_WRITE);
      this.u32(at + 4, slot);
      this.u32(at + 8, n);
      this.buf.set(bytes.subarray(start, start + n), at + 12);
      start += n;
    }
  }

  /** Gives the file in `slot` mtime 1 and closes it. */
  closeFile(slot: number): void {
    const at = this.reserve(8);
    this.u32(at, OP_CLOSE);
    this.u32(at + 4, slot);
    this.freeSlots.push(slot);
  }

  symlink(path: Buffer, target: Uint8Array): void {
    const at = this.reserve(12 + path.length + 1 + target.length + 1);
    this.u32(at, OP_SYMLINK);
    this.u32(at + 4, path.length);
    this.u32(at + 8, target.length);
    this.buf.set(path, at + 12);
    this.buf[at + 12 + path.length] = 0;
    this.buf.set(target, at + 13 + path.length);
    this.buf[at + 13 + path.length + target.length] = 0;
  }

  /** A directory whose entries are all made: mode 0555, mtime 1. */
  seal(path: Buffer): void {
    const at = this.reserve(4 + 4 + path.length + 1);
    this.u32(at, OP_SEAL);
    this.path(at + 4, path);
  }

  /**
   * Takes Nix's lock file `path` without waiting, on the pool thread (native/tree_writer.c
   * LOCK): the caller queues a batch's locks in sorted order, and the first one not taken
   * leaves the rest untaken, for the caller to wait for in the same order. See {@link takeLocks}.
   */
  lockFile(path: Buffer): void {
    const at = this.reserve(4 + 8 + path.length + 1);
    this.u32(at, OP_LOCK);
    this.u32(at + 4, this.locksQueued++);
    this.path(at + 8, path);
  }

  /**
   * Once settled: the descriptors of the locks queued since the last call, in their order, -1
   * for each one not taken; the caller now holds them (and releases them as Nix does).
   */
  takeLocks(): number[] {
    const fds = this.pushed > 0 ? this.addon.treeWriterTakeLocks(this.handle) : [];
    const out = Array.from({ length: this.locksQueued }, (_, i) => fds[i] ?? -1);
    this.locksQueued = 0;
    return out;
  }

  /** Hands what is buffered to the pool now. */
  flush(): void {
    if (this.len > 0) this.push();
  }

  /**
   * A restore ended: hands what is buffered to the pool now if the pool has nothing left to do
   * (else it goes with the next full buffer), so the pool thread is not idle while work waits.
   */
  boundary(): void {
    if (this.len > 0 && this.queued() === 0) this.push();
  }

  /**
   * A wait while too much is queued, else undefined (most calls: no promise made). Once a call
   * has failed, a rejection with its error: the caller stops at its next item, not at the end
   * of its batch.
   */
  ready(): Promise<void> | undefined {
    if (this.pushed > 0 && this.addon.treeWriterFailed(this.handle)) return this.settle();
    return this.queued() > this.queuedLimit ? this.drainTo(this.queuedLimit / 2) : undefined;
  }

  private async drainTo(bytes: number): Promise<void> {
    // No progress signal comes from the pool thread while it runs; a 1 ms look is cheap next to
    // the megabytes of work a wait means. After a failure the rest is dropped (done at once),
    // and the error surfaces at the next settle.
    while (this.queued() > bytes) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }

  /** Runs everything described so far; rejects with the first failing call's error. */
  async settle(): Promise<void> {
    if (this.len > 0) this.push();
    // Nothing ever pushed: nothing ran, nothing failed. Else ask: a failure is for good.
    if (this.pushed === 0) return;
    try {
      await this.addon.treeWriterIdle(this.handle);
    } finally {
      // Another restore sharing the writer may have pushed more meanwhile: forget only what is done.
      this.queued();
    }
  }

  /** After a failure: waits for the pool thread and closes files a stopped restore left open. */
  async abandon(): Promise<void> {
    this.len = 0;
    await this.settle().catch(() => {});
    this.addon.treeWriterClose(this.handle);
    this.freeSlots = allSlots();
  }

  /** Bytes pushed and not yet run; forgets the buffers that are done. */
  private queued(): number {
    if (this.held.length === 0) return 0;
    const done = this.addon.treeWriterDone(this.handle);
    let i = 0;
    for (; i < this.held.length && this.held[i]!.end <= done; i++) {
      if (this.spare.length < SPARE_BUFFERS) this.spare.push(this.held[i]!.buf);
    }
    if (i > 0) this.held.splice(0, i);
    return this.pushed - done;
  }

  private push(): void {
    this.pushed += this.len;
    // The whole buffer is held (and later reused); the addon runs its used part.
    this.held.push({ buf: this.buf, end: this.pushed });
    this.addon.treeWriterPush(this.handle, this.buf.subarray(0, this.len));
    this.buf = this.spare.pop() ?? Buffer.allocUnsafeSlow(BUFFER_SIZE);
    this.len = 0;
  }

  /**
   * Room for `n` more bytes of operations; returns where they go. No operation is larger than a
   * buffer: a path or target is at most 4 KiB, and {@link write} cuts contents to fit.
   */
  private reserve(n: number): number {
    if (this.len + n > BUFFER_SIZE) this.push();
    const at = this.len;
    this.len += n;
    return at;
  }

  private u32(at: number, v: number): void {
    this.buf.writeUInt32LE(v, at);
  }

  /** A length-prefixed, NUL-terminated path at `at`. */
  private path(at: number, path: Buffer): void {
    this.u32(at, path.length);
    path.copy(this.buf, at + 4);
    this.buf[at + 4 + path.length] = 0;
  }
}
