/**
 * Build logs where Nix keeps them: `<logDir>/drvs/<first 2 chars of the drv base name>/<rest>.bz2`
 * (formats.md §1), so `nix-store -l` and `nix log` read what strata wrote.
 *
 * strata has no bzip2 compressor in-process (see compression/bzip2.ts), so a non-empty log is
 * piped through the system's `bzip2` binary, started only when the builder prints its first
 * byte. An empty log (most trivial builds) is the 14-byte empty bzip2 stream written directly:
 * spawning a compressor per build would cost ~2 ms × 200 in the benchmark. Without a `bzip2`
 * binary the log is written uncompressed as `<rest>`, which Nix 2.8 also reads.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, closeSync, constants as C, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

import type { StorePath } from '../core/store-path.js';

/** What `bzip2 < /dev/null` writes: header `BZh9` and the end-of-stream marker with CRC 0. */
const EMPTY_BZIP2 = Buffer.from('425a683917724538509000000000', 'hex');
/** Bytes of recent output kept for the failure message; 10 lines of a normal log fit in 16 KiB. */
const TAIL_BYTES = 16 * 1024;

let bzip2Binary: string | null | undefined;

/** The `bzip2` program on PATH (or /usr/bin, /bin), or null when there is none. */
export function findBzip2(): string | null {
  if (bzip2Binary !== undefined) return bzip2Binary;
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter), '/usr/bin', '/bin'].filter((d) => d !== '');
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
export function buildLogPath(logDir: string, drvPath: StorePath, compressed = findBzip2() !== null): string {
  const base = drvPath.baseName;
  return join(logDir, 'drvs', base.slice(0, 2), base.slice(2) + (compressed ? '.bz2' : ''));
}

/**
 * One build's log: collects the builder's output, forwards it live when asked, keeps the last
 * lines for error messages and writes the log file when closed.
 *
 * @example
 * ```ts
 * const log = new BuildLog('/nix/var/log/nix', drvPath);
 * child.stdout.on('data', (c) => log.write(c));
 * await log.close();
 * log.tailLines(10);
 * ```
 */
export class BuildLog {
  /** Where the log is (being) written. */
  readonly path: string;
  /** False when no bzip2 binary was found and the log is plain text. */
  readonly compressed: boolean;
  private readonly onChunk: ((chunk: Buffer) => void) | undefined;
  private compressor: ChildProcess | undefined;
  private compressorDone: Promise<void> | undefined;
  private plainFd = -1;
  private tail = '';
  private bytes = 0;

  constructor(logDir: string, drvPath: StorePath, onChunk?: (chunk: Buffer) => void) {
    this.compressed = findBzip2() !== null;
    this.path = buildLogPath(logDir, drvPath, this.compressed);
    this.onChunk = onChunk;
    mkdirSync(join(this.path, '..'), { recursive: true });
  }

  /** Appends builder output. */
  write(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.onChunk?.(chunk);
    this.tail += chunk.toString('utf8');
    if (this.tail.length > 2 * TAIL_BYTES) this.tail = this.tail.slice(-TAIL_BYTES);
    if (!this.compressed) {
      if (this.plainFd < 0) this.plainFd = openSync(this.path, 'w', 0o644);
      writeFileSync(this.plainFd, chunk);
      return;
    }
    if (!this.compressor) this.startCompressor();
    this.compressor!.stdin!.write(chunk);
  }

  private startCompressor(): void {
    const fd = openSync(this.path, 'w', 0o644);
    const child = spawn(findBzip2()!, ['-c'], { stdio: ['pipe', fd, 'ignore'] });
    closeSync(fd); // The child has its own copy.
    this.compressor = child;
    this.compressorDone = new Promise((resolve) => {
      child.on('close', () => resolve());
      child.on('error', () => resolve());
    });
    child.stdin!.on('error', () => {}); // A dying compressor must not take the build down.
  }

  /** The last `n` lines the builder printed. */
  tailLines(n: number): string[] {
    const lines = this.tail.replace(/\n$/, '').split('\n');
    return this.tail === '' ? [] : lines.slice(-n);
  }

  /** Total bytes of output. */
  get size(): number {
    return this.bytes;
  }

  /** Finishes the file (waits for the compressor). */
  async close(): Promise<void> {
    if (this.compressor) {
      this.compressor.stdin!.end();
      await this.compressorDone;
      return;
    }
    if (this.plainFd >= 0) {
      closeSync(this.plainFd);
      this.plainFd = -1;
      return;
    }
    writeFileSync(this.path, this.compressed ? EMPTY_BZIP2 : Buffer.alloc(0), { mode: 0o644 });
  }
}
