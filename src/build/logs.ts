/**
 * Build logs where Nix keeps them: `<logDir>/drvs/<first 2 chars of the drv base name>/<rest>.bz2`
 * (formats.md §1), so `nix-store -l` and `nix log` read what strata wrote.
 *
 * The builder's stdout and stderr are one open file (a raw log in the build's temp dir), so
 * their lines interleave exactly as written, as with Nix's single pipe. `-v` follows that file
 * (polled every 100 ms). When the build ends the raw log becomes the store's log: strata has no
 * bzip2 compressor in-process (see compression/bzip2.ts), so a non-empty log goes through the
 * system's `bzip2` binary; an empty log (most trivial builds) is the 14-byte empty bzip2 stream
 * written directly, because a compressor process per build costs ~15 ms here, a third of what a
 * whole trivial build costs Nix. Without a `bzip2` binary the log is kept uncompressed as
 * `<rest>`, which Nix 2.8 also reads.
 */
import { spawn } from 'node:child_process';
import {
  accessSync,
  closeSync,
  constants as C,
  fstatSync,
  mkdirSync,
  openSync,
  readSync,
  writeFileSync,
} from 'node:fs';
import { copyFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

import type { StorePath } from '../core/store-path.js';

/** What `bzip2 < /dev/null` writes: header `BZh9` and the end-of-stream marker with CRC 0. */
const EMPTY_BZIP2 = Buffer.from('425a683917724538509000000000', 'hex');
/** Bytes of the log end read for the failure message; 10 normal lines fit in 16 KiB. */
const TAIL_BYTES = 16 * 1024;
/** How often `-v` looks for new output. */
const FOLLOW_MS = 100;

let bzip2Binary: string | null | undefined;

/** Log dirs (`drvs/<2 chars>`, at most 1,024) known to exist: one mkdir each per process. */
const madeDirs = new Set<string>();

/** Writes an empty build log, making its directory once per process (or again if it vanished). */
function writeEmptyLog(path: string, compressed: boolean): void {
  const bytes = compressed ? EMPTY_BZIP2 : Buffer.alloc(0);
  const dir = join(path, '..');
  if (!madeDirs.has(dir)) {
    mkdirSync(dir, { recursive: true });
    madeDirs.add(dir);
  }
  try {
    writeFileSync(path, bytes, { mode: 0o644 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    // Its directory was removed since we made it (a store deleted and made again in one process).
    mkdirSync(dir, { recursive: true });
    writeFileSync(path, bytes, { mode: 0o644 });
  }
}

/** The `bzip2` program on PATH (or /usr/bin, /bin), or null when there is none. */
export function findBzip2(): string | null {
  if (bzip2Binary !== undefined) return bzip2Binary;
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter), '/usr/bin', '/bin'].filter(
    (d) => d !== '',
  );
  bzip2Binary = null;
  for (const d of dirs) {
    try {
      accessSync(join(d, 'bzip2'), C.X_OK);
      bzip2Binary = join(d, 'bzip2');
      break;
    } catch {
      // Not in this directory.
    }
  }
  return bzip2Binary;
}

/**
 * The log file of a derivation: `<logDir>/drvs/<2>/<rest>` plus `.bz2` when compressed.
 *
 * @example buildLogPath('/nix/var/log/nix', drvPath) // '/nix/var/log/nix/drvs/3g/hsl9…-simple.drv.bz2'
 */
export function buildLogPath(
  logDir: string,
  drvPath: StorePath,
  compressed = findBzip2() !== null,
): string {
  const base = drvPath.baseName;
  return join(logDir, 'drvs', base.slice(0, 2), base.slice(2) + (compressed ? '.bz2' : ''));
}

/**
 * One build's log: the file descriptor the builder writes to, live forwarding, the last lines
 * for error messages, and the store's log file written by {@link BuildLog.close}.
 *
 * @example
 * ```ts
 * const log = new BuildLog(store.logDir, drvPath, join(tmp, 'log'));
 * spawn(builder, args, { stdio: ['ignore', log.fd, log.fd] });
 * await log.close();
 * log.tailLines(10);
 * ```
 */
export class BuildLog {
  /** Where the store's log is written. */
  readonly path: string;
  /** False when no bzip2 binary was found and the log is plain text. */
  readonly compressed: boolean;
  /**
   * The raw log, opened for appending and reading (one descriptor, not two: an open and a close
   * less per build): give it to the builder as stdout and stderr.
   */
  readonly fd: number;
  private readonly onChunk: ((chunk: Buffer) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private followed = 0;
  private tail = '';
  private closed = false;

  constructor(
    logDir: string,
    drvPath: StorePath,
    /** The raw log the builder appends to. */
    readonly rawPath: string,
    onChunk?: (chunk: Buffer) => void,
  ) {
    this.compressed = findBzip2() !== null;
    this.path = buildLogPath(logDir, drvPath, this.compressed);
    this.onChunk = onChunk;
    this.fd = openSync(rawPath, C.O_RDWR | C.O_CREAT | C.O_APPEND | C.O_TRUNC, 0o600);
    if (onChunk) this.timer = setInterval(() => this.pump(), FOLLOW_MS);
  }

  /** Forwards what the builder wrote since the last look. */
  private pump(): void {
    const buf = Buffer.allocUnsafe(64 * 1024);
    for (;;) {
      const n = readSync(this.fd, buf, 0, buf.length, this.followed);
      if (n <= 0) return;
      this.followed += n;
      this.onChunk?.(Buffer.from(buf.subarray(0, n)));
    }
  }

  /** The last `n` lines the builder printed (after {@link close}). */
  tailLines(n: number): string[] {
    if (this.tail === '') return [];
    return this.tail.replace(/\n$/, '').split('\n').slice(-n);
  }

  /** Stops following and writes the store's log file (waits for the compressor). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.onChunk) this.pump();
    const size = fstatSync(this.fd).size;
    const start = Math.max(0, size - TAIL_BYTES);
    const buf = Buffer.alloc(size - start);
    readSync(this.fd, buf, 0, buf.length, start);
    this.tail = buf.toString('utf8');
    try {
      // The empty log of most trivial builds is written synchronously: three syscalls, where
      // `fs.promises` made four thread-pool hand-offs (mkdir, open, write, close) costing
      // ~1.5 ms of CPU per build on this VM, CPU that the builders of a `-j 2` run need.
      if (size === 0) writeEmptyLog(this.path, this.compressed);
      else {
        mkdirSync(join(this.path, '..'), { recursive: true });
        if (!this.compressed) await copyFile(this.rawPath, this.path);
        else await compress(findBzip2()!, this.fd, this.path);
      }
    } finally {
      closeSync(this.fd);
    }
  }
}

/** bzip2 of the file open at `fd` (read from its start) into `dest`. */
async function compress(bzip2: string, fd: number, dest: string): Promise<void> {
  const input = openSync(`/proc/self/fd/${fd}`, 'r'); // A fresh offset at 0.
  const out = openSync(dest, 'w', 0o644);
  try {
    const child = spawn(bzip2, ['-c'], { stdio: [input, out, 'ignore'] });
    await new Promise<void>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) =>
        code === 0 ? resolve() : reject(new Error(`bzip2 exited with ${code}`)),
      );
    });
  } finally {
    closeSync(input);
    closeSync(out);
  }
}
