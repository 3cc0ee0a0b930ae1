/**
 * Copying paths between any two stores: closures in dependency order (references first), many
 * NARs in flight, every NAR verified by the destination before it becomes valid, and Nix's
 * signature policy when the destination is a store on this machine.
 */
import { type Readable, Transform, type TransformCallback } from 'node:stream';

import pLimit from 'p-limit';

import { StrataError } from '../core/error.js';
import type { StorePath } from '../core/store-path.js';
import { computeClosure, topoSortInfos } from './closure.js';
import { readAtMost } from './read-at-most.js';
import { isLocalFsStore, type AddNarsOptions, type NarSource, type PathInfo, type Store } from './store.js';
import { acceptable, type TrustPolicy, trustedKeysOf, untrustedError } from './trust.js';

/** Progress of a copy, reported after each chunk and each finished path. */
export interface CopyProgress {
  pathsDone: number;
  pathsTotal: number;
  /** NAR bytes transferred so far, and the sum of the NAR sizes to transfer. */
  bytesDone: number;
  bytesTotal: number;
  /** The path that just finished, when one did. */
  finished?: StorePath | undefined;
}

/** Options for {@link copyPaths}. */
export interface CopyOptions extends TrustPolicy {
  /** Copy the closures of `paths`, not only the paths. */
  recursive?: boolean | undefined;
  /** NARs in flight at once (default 8: hides per-request latency without thrashing 2 cores). */
  concurrency?: number | undefined;
  onProgress?: ((p: CopyProgress) => void) | undefined;
}

/** What {@link copyPaths} did. */
export interface CopyResult {
  /** Paths added to the destination, references first. */
  copied: StorePath[];
  /** Paths the destination already had. */
  present: StorePath[];
}

/** One path to copy and the store that has it. */
export interface CopyItem {
  info: PathInfo;
  source: Store;
}

/** The PathInfo fields a destination registers: no layer, no local registration facts. */
export function transferableInfo(info: PathInfo): PathInfo {
  const out: PathInfo = { path: info.path, narHash: info.narHash, narSize: info.narSize, references: [...info.references], ultimate: false, sigs: [...info.sigs] };
  if (info.deriver !== undefined) out.deriver = info.deriver;
  if (info.ca !== undefined) out.ca = info.ca;
  return out;
}

class Counter extends Transform {
  constructor(private readonly onBytes: (n: number) => void) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, done: TransformCallback): void {
    this.onBytes(chunk.length);
    done(null, chunk);
  }
}

/**
 * Copies `paths` (with `recursive`, their closures) from one store to another.
 * When the destination is a local or layered store and `requireSigs` is on (the default), every
 * path must be signed by a trusted key or be validly content-addressed; otherwise nothing is
 * copied and `SIG_UNTRUSTED` is thrown.
 *
 * @example
 * ```ts
 * await copyPaths(cache, local, [path], { recursive: true, trustedPublicKeys: ['cache-1:…'] });
 * ```
 */
export async function copyPaths(from: Store, to: Store, paths: StorePath[], options: CopyOptions = {}): Promise<CopyResult> {
  if (options.recursive) await from.prefetchClosure?.(paths);
  // A closure walked narinfo by narinfo (one request per level of a chain): the NARs the
  // destination lacks are downloaded while the walk goes on, not after it.
  const stopAhead = options.recursive ? from.prefetchNars?.(async (p) => !(await to.isValidPath(p)), AHEAD_BYTES) : undefined;
  try {
    return await copyFound(from, to, paths, options);
  } finally {
    stopAhead?.();
  }
}

/** {@link copyPaths} once the closure's narinfos may be coming in. */
async function copyFound(from: Store, to: Store, paths: StorePath[], options: CopyOptions): Promise<CopyResult> {
  let infos: PathInfo[];
  if (options.recursive) {
    infos = [...(await computeClosure(from, paths)).values()];
  } else {
    infos = [];
    for (const p of paths) {
      const info = await from.queryPathInfo(p);
      if (!info) {
        const full = from.storeDir.print(p);
        throw new StrataError('PATH_NOT_VALID', `Cannot copy '${full}': it is not valid in '${from.uri}'`, { value: full });
      }
      infos.push(info);
    }
  }
  // Paths found valid are relied on as references of what is added next: a GC running beside us
  // must not take them in between, so they become temp roots before validity is asked.
  await addTempRoots(to, infos.map((i) => i.path));
  const have = new Set((await to.queryValidPaths(infos.map((i) => i.path))).map((p) => p.baseName));
  const todo = infos.filter((i) => !have.has(i.path.baseName));
  const present = infos.filter((i) => have.has(i.path.baseName)).map((i) => i.path);
  checkTrust(to, todo.map((info) => ({ info, source: from })), options);
  const copied = await copyItems(to, todo.map((info) => ({ info, source: from })), options);
  return { copied, present };
}

/** Options for {@link copyItems}. */
export interface CopyItemsOptions extends Pick<CopyOptions, 'concurrency' | 'onProgress'> {
  /**
   * Called when reading a path's NAR from its source fails (unreadable, corrupt, not the bytes
   * its info declares), before the failure stops the copy: substitution then tries the path's
   * next substituter, as Nix does.
   */
  onSourceError?: ((info: PathInfo, error: unknown) => void) | undefined;
}

/** Protects `paths` in `to` from a concurrent GC, when `to` is a store with GC roots. */
export async function addTempRoots(to: Store, paths: StorePath[]): Promise<void> {
  if (isLocalFsStore(to)) await to.addTempRoots(paths);
}

/** Refuses the whole batch when one path fails the signature policy (nothing is copied). */
export function checkTrust(to: Store, items: CopyItem[], policy: TrustPolicy): void {
  if (!isLocalFsStore(to) || policy.requireSigs === false) return;
  const keys = trustedKeysOf(policy);
  for (const { info, source } of items) if (!acceptable(to.storeDir, info, keys, true)) throw untrustedError(to.storeDir, info, source.uri);
}

/**
 * Paths registered per transaction when copying into a store with `addFromNars`, and the NAR
 * bytes they may add up to: a closure is registered in a few large transactions, as Nix's
 * `registerValidPaths` does, while a failure late in a huge copy loses at most one batch of work
 * (a batch is all or nothing) and the paths locked at once stay well below the 20,000
 * descriptors a process may open here.
 */
const BATCH_PATHS = 1000;
const BATCH_BYTES = 1 << 30;

/**
 * NARs up to this size are read whole and handed to `addFromNars` as bytes, which it restores
 * synchronously from memory: a median store path's NAR is ~20 KiB, and a stream per small NAR
 * (a promise and a yield per chunk) cost as much as restoring it. At most `concurrency` are held
 * at once (8 MiB at the default 8).
 */
const WHOLE_NAR_MAX = 1 << 20;

/**
 * Small NARs from a source that fetches many in one request (`narBytesMany`: strata serve's
 * `nars/` endpoint) are asked for in windows of consecutive paths of at most this many bytes. A
 * window is requested when its first NAR is read, together with the next window, so restores
 * rarely wait for the network, and at most two windows (4 MiB) are held besides the NARs being
 * restored.
 */
const WINDOW_BYTES = 2 << 20;

/**
 * NAR bytes a source may download ahead during a closure walk and hold until the copy takes
 * them: as many as 8 whole NARs in flight may hold.
 */
export const AHEAD_BYTES = 8 << 20;

/** A source that can fetch many small NARs in one request (strata serve's `nars/` endpoint). */
type ManySource = Store & Required<Pick<Store, 'narBytesMany'>>;

const isManySource = (s: Store): s is ManySource => s.narBytesMany !== undefined;

interface Window {
  source: ManySource;
  infos: PathInfo[];
  bytes: number;
  /** Once requested: one promise per NAR, dropped as each is handed out. */
  nars?: Promise<Array<Promise<Uint8Array> | undefined>>;
}

/** The small NARs of `ordered` that come from a {@link ManySource}, fetched window by window. */
class NarWindows {
  readonly #windows: Window[] = [];
  /** baseName → [window, position in it]. */
  readonly #at = new Map<string, [number, number]>();

  constructor(ordered: PathInfo[], sourceOf: Map<string, Store>) {
    let current: Window | undefined;
    for (const info of ordered) {
      const source = sourceOf.get(info.path.baseName)!;
      if (info.narSize > WHOLE_NAR_MAX || !isManySource(source)) continue;
      if (!current || current.source !== source || current.bytes + info.narSize > WINDOW_BYTES) {
        current = { source, infos: [], bytes: 0 };
        this.#windows.push(current);
      }
      this.#at.set(info.path.baseName, [this.#windows.length - 1, current.infos.length]);
      current.infos.push(info);
      current.bytes += info.narSize;
    }
  }

  has(info: PathInfo): boolean {
    return this.#at.has(info.path.baseName);
  }

  /** Requests the first two windows now, before the first NAR is asked for. */
  begin(): void {
    this.#start(0);
    this.#start(1);
  }

  async get(info: PathInfo): Promise<Uint8Array> {
    const [w, k] = this.#at.get(info.path.baseName)!;
    this.#start(w);
    this.#start(w + 1);
    const nars = await this.#windows[w]!.nars!;
    const nar = nars[k]!;
    nars[k] = undefined; // held no longer than its reader holds it
    return nar;
  }

  #start(w: number): void {
    const win = this.#windows[w];
    if (!win || win.nars) return;
    win.nars = win.source.narBytesMany(win.infos.map((i) => i.path));
    win.nars.catch(() => {}); // its readers see the failure
  }
}

/** The bytes of a small NAR; more than the declared size fails at once (a hostile source cannot make us hold more). */
async function readWhole(nar: Readable, info: PathInfo, to: Store): Promise<Uint8Array> {
  const bytes = await readAtMost(nar, info.narSize);
  if (bytes) return bytes;
  const full = to.storeDir.print(info.path);
  throw new StrataError('SIZE_MISMATCH', `Cannot add '${full}': NAR size mismatch, declared ${info.narSize}, got more than ${info.narSize} bytes`, { value: full });
}

/**
 * Adds `items` to `to`, references first: up to `concurrency` NARs in flight. Into a store with
 * `addFromNars` (the local store) the NARs of a whole batch are fetched and verified in
 * parallel, even along a chain of references, and the batch registered in one transaction; into
 * others each path is added once its references are in. The first failure stops what has not
 * started and is thrown once the running transfers settle; batches (or paths) already added
 * stay, each complete and verified.
 */
export async function copyItems(to: Store, items: CopyItem[], options: CopyItemsOptions = {}): Promise<StorePath[]> {
  const ordered = topoSortInfos(items.map((i) => i.info));
  const sourceOf = new Map(items.map((i) => [i.info.path.baseName, i.source]));
  const progress: CopyProgress = { pathsDone: 0, pathsTotal: ordered.length, bytesDone: 0, bytesTotal: ordered.reduce((s, i) => s + i.narSize, 0) };
  const report = (finished?: StorePath) => options.onProgress?.({ ...progress, finished });
  const limit = Math.max(1, options.concurrency ?? 8);
  /** Tells the caller that reading `info`'s NAR from its source failed, and rethrows. */
  const blame = (info: PathInfo) => (e: unknown): never => {
    options.onSourceError?.(info, e);
    throw e;
  };
  /** The NAR of `info` from its source, counted for the progress report. */
  const openNar = async (info: PathInfo): Promise<Readable> => {
    const nar = await sourceOf.get(info.path.baseName)!.narFromPath(info.path).catch(blame(info));
    const counted = new Counter((n) => ((progress.bytesDone += n), report()));
    // pipe() does not forward errors: a failed verification must reach the destination.
    nar.on('error', (e) => {
      options.onSourceError?.(info, e);
      counted.destroy(e);
    });
    // The destination may stop reading early (it found the NAR bad itself); a verification
    // error the source raises after that has no reader left and must not crash the process.
    // While the destination reads, its own listener still receives the error.
    counted.on('error', () => {});
    return nar.pipe(counted);
  };
  /** A small NAR in memory: from the source in one piece when it can, else its stream read whole. */
  const wholeNar = async (info: PathInfo): Promise<Uint8Array> => {
    const source = sourceOf.get(info.path.baseName)!;
    if (!source.narBytes) return readWhole(await openNar(info), info, to).catch(blame(info));
    const bytes = await source.narBytes(info.path).catch(blame(info));
    progress.bytesDone += bytes.length;
    report();
    return bytes;
  };
  if (to.addFromNars) {
    const windows = new NarWindows(ordered, sourceOf);
    // The server reads the first NARs while the destination sets up (temp roots, staging dir,
    // tree writer: ~20 ms of a 300-path substitution, spent waiting for the first NAR before).
    windows.begin();
    const windowed = async (info: PathInfo): Promise<Uint8Array> => {
      const bytes = await windows.get(info).catch(blame(info));
      progress.bytesDone += bytes.length;
      report();
      return bytes;
    };
    const narOf = (info: PathInfo) => (windows.has(info) ? windowed(info) : info.narSize <= WHOLE_NAR_MAX ? wholeNar(info) : openNar(info));
    return copyInBatches(to.addFromNars.bind(to), ordered, narOf, limit, progress, report);
  }

  const slot = pLimit(limit);
  let failure: unknown;
  const copied: StorePath[] = [];
  const done = new Map<string, Promise<void>>();
  for (const info of ordered) {
    const deps = info.references.filter((r) => r.baseName !== info.path.baseName && done.has(r.baseName)).map((r) => done.get(r.baseName)!);
    done.set(
      info.path.baseName,
      (async () => {
        await Promise.all(deps);
        await slot(async () => {
          try {
            if (failure !== undefined) throw failure;
            await to.addFromNar(transferableInfo(info), await openNar(info));
            copied.push(info.path);
            progress.pathsDone++;
            report(info.path);
          } catch (e) {
            failure ??= e;
            throw e;
          }
        });
      })(),
    );
  }
  await Promise.allSettled(done.values());
  if (failure !== undefined) throw failure;
  return copied;
}

/** {@link copyItems} into a store with `addFromNars`: `ordered` (references first) in batches. */
async function copyInBatches(
  addFromNars: (items: NarSource[], options: AddNarsOptions) => Promise<void>,
  ordered: PathInfo[],
  openNar: (info: PathInfo) => Promise<Readable | Uint8Array>,
  concurrency: number,
  progress: CopyProgress,
  report: (finished?: StorePath) => void,
): Promise<StorePath[]> {
  const copied: StorePath[] = [];
  for (let start = 0; start < ordered.length; ) {
    let end = start;
    let bytes = 0;
    while (end < ordered.length && end - start < BATCH_PATHS && (end === start || bytes + ordered[end]!.narSize <= BATCH_BYTES)) bytes += ordered[end++]!.narSize;
    const batch = ordered.slice(start, end);
    await addFromNars(
      batch.map((info) => ({ info: transferableInfo(info), nar: () => openNar(info) })),
      { concurrency },
    );
    for (const info of batch) {
      copied.push(info.path);
      progress.pathsDone++;
      report(info.path);
    }
    start = end;
  }
  return copied;
}
