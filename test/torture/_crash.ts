/**
 * Crash-trial machinery: spawn a real strata process, SIGKILL it after a random delay, then
 * check the store the way an operator would (strata verify, real Nix 2.8's verify) and the way
 * only a test can (every row re-hashed; every entry of the store dir accounted for).
 */
import { spawn } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

import Database from 'better-sqlite3';

import { Hash } from '../../src/core/hash.js';
import { StorePath } from '../../src/core/store-path.js';
import { hashPath } from '../../src/fs/hash-path.js';
import { ROOT, runStrata } from '../support/cli.js';
import { runNix } from '../support/nix.js';

export interface KilledRun {
  /** True when the process was still running when the signal was sent. */
  killed: boolean;
  /** Milliseconds from spawn to exit. */
  elapsed: number;
  code: number | null;
  stderr: string;
}

/**
 * Runs `argv` (argv[0] a script for node) in its own process group and SIGKILLs the group after
 * `delayMs` (the whole group: `strata` and any helpers it spawned in its group).
 */
export function runAndKill(
  argv: string[],
  delayMs: number,
  stdinFile?: string,
): Promise<KilledRun> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    // Standard input from a file when given (`strata import < export`), else none.
    const stdin = stdinFile === undefined ? 'ignore' : openSync(stdinFile, 'r');
    const child = spawn(process.execPath, argv, {
      cwd: ROOT,
      detached: true,
      stdio: [stdin, 'ignore', 'pipe'],
    });
    if (typeof stdin === 'number') closeSync(stdin);
    const err: Buffer[] = [];
    child.stderr!.on('data', (c: Buffer) => err.push(c));
    let exited = false;
    let killed = false;
    const timer = setTimeout(() => {
      if (exited || child.pid === undefined) return;
      killed = true;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // It exited between the check and the kill.
      }
    }, delayMs);
    child.on('error', reject);
    child.on('exit', () => (exited = true));
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({
        killed,
        code,
        stderr: Buffer.concat(err).toString(),
        elapsed: Date.now() - started,
      });
    });
  });
}

/**
 * Picks kill delays inside the command's real running time, learnt from the runs that were not
 * killed (the machine and strata's speed vary; a fixed window would kill after the work is done).
 */
export class KillClock {
  constructor(private ms: number) {}

  /** A delay somewhere in the expected run, past the first few milliseconds of start-up. */
  pick(rand: () => number): number {
    return 30 + rand() * Math.max(50, this.ms - 30);
  }

  /** Learns from a run: one that finished tells how long the whole command takes. */
  observe(run: KilledRun): void {
    if (!run.killed) this.ms = Math.max(80, run.elapsed * 0.95);
  }
}

/** `node bin/strata …` as argv for {@link runAndKill}. */
export const strataArgv = (...args: string[]): string[] => [join(ROOT, 'bin', 'strata'), ...args];
/** The crash worker as argv for {@link runAndKill}. */
export const workerArgv = (...args: string[]): string[] => [
  join(ROOT, 'test', 'torture', 'fixtures', 'worker.mjs'),
  ...args,
];

/** A source tree for adding: small files, an executable, a symlink and one larger file. */
export interface Source {
  dir: string;
  name: string;
  narHash: Hash;
  narSize: number;
}

/** Writes a source tree whose shape and bytes come from `rand`; `big` sets the large file's size. */
export async function makeSource(
  dir: string,
  name: string,
  rand: () => number,
  big: number,
): Promise<Source> {
  mkdirSync(join(dir, 'sub', 'deeper'), { recursive: true });
  const files = 3 + Math.floor(rand() * 20);
  for (let i = 0; i < files; i++)
    writeFileSync(
      join(dir, i % 3 ? 'sub' : '.', `f${i}`),
      `${name} ${i} ${rand()}\n`.repeat(1 + Math.floor(rand() * 50)),
    );
  writeFileSync(join(dir, 'sub', 'deeper', 'run.sh'), `#!/bin/sh\necho ${name}\n`);
  chmodSync(join(dir, 'sub', 'deeper', 'run.sh'), 0o755);
  symlinkSync('sub/f1', join(dir, 'link'));
  if (big > 0) {
    const b = Buffer.alloc(big);
    for (let i = 0; i < big; i += 4096) b.writeUInt32LE(Math.floor(rand() * 2 ** 32), i);
    writeFileSync(join(dir, 'big.bin'), b);
  }
  const { hash, narSize } = await hashPath(dir);
  return { dir, name, narHash: hash, narSize };
}

/** What a store must look like after a crash. */
export interface Expectation {
  /** Base names the interrupted command may have created, with the NAR hash their files must have. */
  complete: Map<string, Hash>;
  /** Base names that must stay valid whatever happened (rooted paths, lower paths in use). */
  mustStayValid?: string[];
  /**
   * Whether a store-path-named entry that is neither valid nor in `complete` is allowed: a GC or
   * delete killed half-way leaves an invalidated, half-deleted object, as Nix's does, for the next
   * GC to remove. Never allowed for adds.
   */
  allowHalfDeleted?: boolean;
  /** Base names visible through a layered store's merged dir because a lower has them. */
  lowerPaths?: Set<string>;
}

/** The result of {@link checkStore}: a list of problems (empty when consistent). */
export async function checkStore(
  root: string,
  exp: Expectation,
  options: { storeUri?: string; nix?: boolean } = {},
): Promise<string[]> {
  const problems: string[] = [];
  const uri = options.storeUri ?? root;
  const real = join(root, 'nix', 'store');
  const v = await runStrata(['--store', uri, 'verify', '--check-contents']);
  if (v.code !== 0) problems.push(`strata verify exited ${v.code}: ${v.stderr.trim()}`);
  if (/database is locked/i.test(v.stderr)) problems.push(`strata verify: ${v.stderr.trim()}`);
  if (options.nix !== false) {
    const n = runNix('nix-store', ['--store', root, '--verify', '--check-contents']);
    if (n.code !== 0 || /error|modified|disappeared/.test(n.stderr))
      problems.push(`nix-store --verify exited ${n.code}: ${n.stderr.trim()}`);
  }
  // Every row, re-hashed here (not through strata's verify).
  const db = new Database(join(root, 'nix', 'var', 'nix', 'db', 'db.sqlite'), {
    readonly: true,
    fileMustExist: true,
  });
  let rows: Array<{ path: string; hash: string; narSize: number | null }>;
  try {
    rows = db.prepare('SELECT path, hash, narSize FROM ValidPaths').all() as typeof rows;
  } finally {
    db.close();
  }
  const valid = new Set<string>();
  for (const row of rows) {
    const base = row.path.slice('/nix/store/'.length);
    valid.add(base);
    const p = join(real, base);
    if (!existsSync(p) && !isSymlink(p)) {
      problems.push(`valid path ${base} is missing`);
      continue;
    }
    const { hash, narSize } = await hashPath(p);
    if (`sha256:${hash.toBase16()}` !== row.hash || narSize !== (row.narSize ?? 0))
      problems.push(`valid path ${base} is partial or modified`);
  }
  for (const base of exp.mustStayValid ?? [])
    if (!valid.has(base)) problems.push(`${base} should have stayed valid`);
  // Every entry of the store dir: valid, a complete object the command was making, or scratch.
  for (const name of readdirSync(real)) {
    if (
      name === '.links' ||
      name.endsWith('.lock') ||
      name.startsWith('tmp-') ||
      name.startsWith('.tmp-link-') ||
      valid.has(name) ||
      exp.lowerPaths?.has(name)
    )
      continue;
    let isStorePathName = true;
    try {
      StorePath.fromBaseName(name);
    } catch {
      isStorePathName = false;
    }
    if (!isStorePathName) {
      problems.push(`unexpected entry ${name}`);
      continue;
    }
    const want = exp.complete.get(name);
    if (want) {
      const { hash } = await hashPath(join(real, name));
      if (!hash.equals(want)) problems.push(`half-written object visible under store path ${name}`);
    } else if (!exp.allowHalfDeleted) {
      problems.push(`unregistered object ${name}`);
    }
  }
  return problems;
}

function isSymlink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Leftovers GC must remove: stale staging dirs, free lock files, invalid store-path entries. */
export function leftovers(real: string, valid: Set<string>): string[] {
  return readdirSync(real).filter((n) => n !== '.links' && !valid.has(n));
}

/** Valid base names, read from the DB directly. */
export function validSet(root: string): Set<string> {
  const db = new Database(join(root, 'nix', 'var', 'nix', 'db', 'db.sqlite'), {
    readonly: true,
    fileMustExist: true,
  });
  try {
    return new Set(
      (db.prepare('SELECT path FROM ValidPaths').all() as Array<{ path: string }>).map((r) =>
        r.path.slice('/nix/store/'.length),
      ),
    );
  } finally {
    db.close();
  }
}
