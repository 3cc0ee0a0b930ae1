/**
 * A mount namespace shared by the builds of one `realise` run, in which the store is visible at
 * its logical path as an overlay: lower = the real store dir, upper = a scratch dir that catches
 * every write.
 *
 * Why one namespace per run and not per build: on this kind of VM an exec costs ~15 ms and an
 * overlay mount plus its teardown ~70 ms (the unmount syncs the upper's file system), while a
 * whole trivial build costs real Nix ~48 ms. Per build that was 130 ms (bench/realise.ts).
 *
 * Why a spawner process inside it: Node's spawn() forks the whole Node process, ~45 ms here
 * (measured with --cpu-prof: 4.5 s of 100 builds in ChildProcess.spawn). The namespace's holder
 * is a small loop that starts the builders for us (spawner.ts: Python's posix_spawn, else Perl's
 * fork + exec). Without either the holder is `cat` and builders enter with `nsenter` from Node.
 *
 * Outputs are renamed out of the upper into the real store after each build; dentries the
 * overlay cached for them keep pointing at the same inodes, so later builds read them as before,
 * and new lower entries are found on lookup.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { constants as osConstants } from 'node:os';

import { StrataError } from '../core/error.js';
import { removeTree } from '../fs/remove-tree.js';
import { SPAWNER_PERL, SPAWNER_PYTHON } from './spawner.js';

/** Characters overlayfs would read as option syntax in a lowerdir/upperdir value. */
const OVERLAY_UNSAFE = /[,:\\]/;

/**
 * The mounts of a build namespace, as shell lines over the variables real, logical, upper, work,
 * scratch and parent: the store at its logical path as an overlay whose upper catches every
 * write, the real store dir read-only. Shared by the per-run namespace and the one-off wrapper.
 *
 * The store overlay is `volatile` (Linux 5.10+; plain before): its upper is scratch, emptied as
 * outputs are renamed out and removed afterwards, so the sync of the upper's whole file system
 * that a normal overlay makes when the namespace ends buys nothing. On a disk shared with busy
 * neighbours that sync took 70-440 ms at the end of every run (bench/realise.ts).
 */
export const OVERLAY_MOUNT_SH = `if [ "$parent" != - ]; then
  mount -t tmpfs strata-build "$scratch"
  mkdir "$scratch/u" "$scratch/w"
  mount -t overlay strata-build -o "lowerdir=$parent,upperdir=$scratch/u,workdir=$scratch/w" "$parent"
  mkdir -p "$logical"
fi
o="lowerdir=$real,upperdir=$upper,workdir=$work"
mount -t overlay strata-build -o "$o,volatile" "$logical" 2>/dev/null || mount -t overlay strata-build -o "$o" "$logical"
if [ "$real" != "$logical" ]; then mount --bind -o ro "$real" "$real"; fi
`;

// $1 real $2 logical $3 upper $4 work $5 tmpfs scratch $6 parent to overlay or "-", $7 and $8
// the Perl and Python spawners, $9 which to try first (see SpawnerChoice).
const SETUP = `set -e
real=$1 logical=$2 upper=$3 work=$4 scratch=$5 parent=$6
${OVERLAY_MOUNT_SH}if [ "$9" = auto ] && [ -x /usr/bin/python3 ]; then exec /usr/bin/python3 -I -S -c "$8" "$7"; fi
if [ "$9" != none ] && [ -x /usr/bin/perl ]; then exec /usr/bin/perl -e "$7"; fi
echo ready cat
exec cat > /dev/null
`;

/**
 * Which spawner a namespace runs: `auto` (Python's posix_spawn, else Perl, else none), `perl`
 * (Perl, else none) or `none` (builders enter with `nsenter`). Only tests choose.
 */
export type SpawnerChoice = 'auto' | 'perl' | 'none';

/** How a builder started through the spawner ended. */
export interface SpawnedExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

function osSignalName(n: number): NodeJS.Signals | undefined {
  return (Object.entries(osConstants.signals) as Array<[NodeJS.Signals, number]>).find(
    ([, v]) => v === n,
  )?.[0];
}

/** The deepest existing ancestor of `dir` (itself when it exists). */
function existingAncestor(dir: string): string {
  let d = dir;
  while (!existsSync(d)) d = dirname(d);
  return d;
}

/**
 * The arguments of the setup script: checks the paths and finds where the logical store dir
 * must be created inside the namespace (a tmpfs-backed overlay of its deepest existing parent,
 * never a change to the host).
 */
export function overlaySetupArgs(
  realStoreDir: string,
  logicalStoreDir: string,
  upperDir: string,
  workDir: string,
  scratchDir: string,
): string[] {
  for (const [what, p] of [
    ['store dir', realStoreDir],
    ['build scratch dir', upperDir],
  ] as const) {
    if (OVERLAY_UNSAFE.test(p)) {
      throw new StrataError(
        'BUILD_SETUP_FAILED',
        `Cannot mount the build overlay on '${p}': the ${what} contains ',', ':' or '\\'`,
        { value: p },
      );
    }
  }
  const ancestor = existingAncestor(logicalStoreDir);
  let parent = '-';
  if (ancestor !== logicalStoreDir) {
    if (ancestor === '/') {
      throw new StrataError(
        'BUILD_SETUP_FAILED',
        `Cannot show the store at '${logicalStoreDir}' to builders: no directory on its way exists but '/'`,
        {
          value: logicalStoreDir,
          hint: `create it once with 'mkdir -p ${logicalStoreDir}'`,
        },
      );
    }
    parent = ancestor;
  }
  return [realStoreDir, logicalStoreDir, upperDir, workDir, scratchDir, parent];
}

/**
 * The shared build namespace. Its holder process (a `cat` reading our pipe) keeps it alive;
 * closing the pipe, or this process dying, ends it and unmounts everything.
 *
 * @example
 * ```ts
 * const ns = await BuildNamespace.open(store.realStoreDir, '/nix/store', join(store.stateDir, 'builds'));
 * spawn('nsenter', [`--mount=${ns.mountNamespace}`, '--wd=/tmp/x', '/bin/sh', '-c', 'echo > $out'], { env });
 * await ns.close();
 * ```
 */
export class BuildNamespace {
  private nextId = 0;
  private readonly pending = new Map<
    string,
    { started: (pid: number) => void; exited: (e: SpawnedExit) => void }
  >();
  private lineBuf = '';

  private constructor(
    private readonly holder: ChildProcess,
    /** The scratch dir: `upper/` (what builders wrote), `work/`, `tmp/`. */
    readonly scratch: string,
    /** What starts builders: a spawner (src/build/spawner.ts), or none (use `nsenter`). */
    readonly spawner: 'python' | 'perl' | 'none',
  ) {
    holder.stdout!.on('data', (c: Buffer) => this.onAnswer(c));
    // A holder that dies (killed from outside) must not leave builds waiting forever.
    holder.on('exit', () => {
      for (const p of this.pending.values()) p.exited({ code: null, signal: 'SIGKILL' });
      this.pending.clear();
    });
  }

  private onAnswer(c: Buffer): void {
    this.lineBuf += c.toString('utf8');
    let nl: number;
    while ((nl = this.lineBuf.indexOf('\n')) >= 0) {
      const [kind, id, a, b] = this.lineBuf.slice(0, nl).split(' ');
      this.lineBuf = this.lineBuf.slice(nl + 1);
      const p = this.pending.get(id ?? '');
      if (!p) continue;
      if (kind === 'started') p.started(Number(a));
      else if (kind === 'exit') {
        this.pending.delete(id!);
        if (this.pending.size === 0) this.setRef(false);
        const sig = Number(b);
        p.exited({
          code: sig === 0 ? Number(a) : null,
          signal: sig === 0 ? null : (osSignalName(sig) ?? null),
        });
      }
    }
  }

  /** Keeps this process alive only while builds are waiting for answers. */
  private setRef(on: boolean): void {
    const s = this.holder.stdout as unknown as { ref?: () => void; unref?: () => void };
    if (on) {
      this.holder.ref();
      s.ref?.();
    } else {
      this.holder.unref();
      s.unref?.();
    }
  }

  /**
   * Starts a builder through the spawner: `pid` resolves when it runs (its process group is
   * `-pid`), `exit` when it ended.
   */
  spawn(req: { cwd: string; logPath: string; argv: string[]; env: Map<string, string> }): {
    pid: Promise<number>;
    exit: Promise<SpawnedExit>;
  } {
    const id = String(this.nextId++);
    const fields = [id, req.cwd, req.logPath, String(req.argv.length), ...req.argv];
    for (const [k, v] of req.env) fields.push(`${k}=${v}`);
    for (const f of fields) {
      if (f.includes('\0'))
        throw new StrataError(
          'DRV_INVALID',
          `Cannot start builder '${req.argv[0]}': an argument or variable contains a NUL byte`,
          { value: req.argv[0] },
        );
    }
    const body = Buffer.from(fields.join('\0'), 'utf8');
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    let started!: (pid: number) => void;
    let exited!: (e: SpawnedExit) => void;
    const pid = new Promise<number>((r) => (started = r));
    const exit = new Promise<SpawnedExit>((r) => (exited = r));
    this.pending.set(id, { started, exited });
    this.setRef(true);
    this.holder.stdin!.write(Buffer.concat([head, body]));
    return { pid, exit };
  }

  /** True when builders are started by a spawner; false: use `nsenter`. */
  get hasSpawner(): boolean {
    return this.spawner !== 'none';
  }

  /** Where builders' writes land: `<upper>/<base name>` for `/nix/store/<base name>`. */
  get upperDir(): string {
    return join(this.scratch, 'upper');
  }

  /** The namespace file to give `nsenter --mount=`. */
  get mountNamespace(): string {
    return `/proc/${this.holder.pid}/ns/mnt`;
  }

  /** Sets up the namespace; `buildsDir` should be on the store's file system (outputs are renamed out). */
  static async open(
    realStoreDir: string,
    logicalStoreDir: string,
    buildsDir: string,
    spawner: SpawnerChoice = 'auto',
  ): Promise<BuildNamespace> {
    mkdirSync(buildsDir, { recursive: true });
    const scratch = mkdtempSync(join(buildsDir, 'session-'));
    for (const d of ['upper', 'work', 'tmp']) mkdirSync(join(scratch, d));
    try {
      const args = overlaySetupArgs(
        realStoreDir,
        logicalStoreDir,
        join(scratch, 'upper'),
        join(scratch, 'work'),
        join(scratch, 'tmp'),
      );
      const holder = spawn(
        'unshare',
        [
          '--mount',
          '--propagation',
          'private',
          '/bin/sh',
          '-c',
          SETUP,
          'strata-build-ns',
          ...args,
          SPAWNER_PERL,
          SPAWNER_PYTHON,
          spawner,
        ],
        {
          env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' },
          stdio: ['pipe', 'pipe', 'pipe'],
        },
      );
      const err: Buffer[] = [];
      holder.stderr!.on('data', (c: Buffer) => err.push(c));
      const kind = await new Promise<'python' | 'perl' | 'none'>((resolve, reject) => {
        let out = '';
        holder.on('error', reject);
        const onData = (c: Buffer): void => {
          out += c.toString();
          if (!out.includes('\n')) return;
          holder.stdout!.off('data', onData);
          const m = /^ready (python|perl)\n/.exec(out);
          resolve(m ? (m[1] as 'python' | 'perl') : 'none');
        };
        holder.stdout!.on('data', onData);
        holder.on('exit', () => {
          const msg =
            Buffer.concat(err).toString().trim().split('\n').at(-1) ||
            'the namespace holder exited';
          reject(
            new StrataError(
              'BUILD_SETUP_FAILED',
              `Cannot set up the build namespace for '${realStoreDir}': ${msg}`,
              { value: realStoreDir },
            ),
          );
        });
      });
      holder.removeAllListeners('exit');
      for (const s of [holder.stdin, holder.stdout, holder.stderr])
        (s as unknown as { unref?: () => void }).unref?.();
      holder.unref();
      return new BuildNamespace(holder, scratch, kind);
    } catch (e) {
      removeTree(scratch);
      throw e;
    }
  }

  /** Ends the namespace (unmounting the overlay) and removes the scratch dir. */
  async close(): Promise<void> {
    if (this.holder.exitCode === null && this.holder.signalCode === null) {
      const exited = new Promise<void>((resolve) => this.holder.once('exit', () => resolve()));
      this.holder.ref(); // Unreferenced while idle; now the wait must keep the process alive.
      this.holder.stdin!.end();
      await exited;
    }
    removeTree(this.scratch);
  }
}
