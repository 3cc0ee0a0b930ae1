/**
 * Real Nix 2.8 (Debian's nix-bin) as an oracle: single-user, no daemon, no sandbox, no
 * substituters, with its own config and narinfo cache, always against a chroot store (`--store
 * DIR`) so the machine's /nix is never touched. See ../shared/spec/formats.md §1.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

let confDir: string | undefined;

export function nixEnv(): NodeJS.ProcessEnv {
  if (!confDir) {
    confDir = mkdtempSync(join(tmpdir(), 'strata-nixconf-'));
    writeFileSync(
      join(confDir, 'nix.conf'),
      'build-users-group =\nsandbox = false\nexperimental-features = nix-command\nsubstituters =\nrequire-sigs = true\n',
    );
    mkdirSync(join(confDir, 'cache'), { recursive: true });
  }
  const env: NodeJS.ProcessEnv = { ...process.env, NIX_CONF_DIR: confDir, XDG_CACHE_HOME: join(confDir, 'cache') };
  delete env['NIX_REMOTE'];
  return env;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a real Nix command (`nix`, `nix-store`, `nix-instantiate`, …). */
export function runNix(command: string, args: string[], options: { input?: string | Buffer; env?: NodeJS.ProcessEnv } = {}): RunResult {
  const r = spawnSync(command, args, { env: { ...nixEnv(), ...options.env }, input: options.input, maxBuffer: 1 << 30 });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** True when real Nix is installed (CI installs it; the suite requires it). */
export function haveNix(): boolean {
  return spawnSync('nix-store', ['--version']).status === 0;
}

/**
 * Runs `script` (a shell line) with real Nix in a private mount namespace whose /nix is the dir
 * `nixDir`: for what Nix does only in its real store dir (builds, with `sandbox = false`).
 */
export function nixInPrivateNix(nixDir: string, script: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('unshare', ['-m', 'sh', '-c', `mount --bind "$NIXDIR" /nix && ${script}`], {
      env: { ...nixEnv(), NIXDIR: nixDir },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
    );
  });
}

/**
 * Builds the attributes of the Nix expression `expr` with real `nix-build` into a new chroot
 * store (sandboxed, the host's /bin, /lib and /usr visible) and returns the store's root and the
 * output paths, one per attribute in name order.
 */
export function nixBuildExpr(work: string, expr: string): { root: string; outs: string[] } {
  const root = join(work, 'store');
  writeFileSync(join(work, 'default.nix'), expr);
  const build = runNix('nix-build', ['--store', root, '--option', 'sandbox', 'true', '--option', 'sandbox-paths', '/bin /lib /lib64 /usr', '--no-out-link', join(work, 'default.nix')]);
  if (build.code !== 0 || /^error/m.test(build.stderr)) throw new Error(`nix-build failed: ${build.stderr}`);
  return { root, outs: build.stdout.trim().split('\n') };
}
