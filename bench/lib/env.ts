/**
 * Where benchmarks keep their data, the private build they time, and the environment real Nix 2.8
 * runs in (single-user, no daemon, chroot stores; see ../shared/spec/formats.md §1).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CACHE = join(ROOT, '.cache', 'bench');

/** A scratch directory for one benchmark, under .cache/bench (the caller removes it). */
export function dataDir(name: string): string {
  const d = join(CACHE, name);
  mkdirSync(d, { recursive: true });
  return d;
}

/**
 * Compiles src/ into .cache/bench/dist and returns its CLI entry. The checkout's dist/ is shared
 * with whoever else builds in this tree; a private build makes the timed code exactly this src/
 * and keeps a concurrent `npm run build` from swapping files under a timed run.
 */
export function privateBuild(): string {
  const out = join(CACHE, 'dist');
  try {
    execFileSync(
      'npx',
      [
        'tsc',
        '-p',
        'tsconfig.build.json',
        '--outDir',
        out,
        '--declaration',
        'false',
        '--sourceMap',
        'false',
      ],
      { cwd: ROOT, stdio: 'pipe' },
    );
  } catch (e) {
    // Type errors still emit JavaScript; only a missing entry point is fatal.
    process.stderr.write(
      `warning: tsc reported errors (timing the emitted code anyway): ${String((e as { stdout?: Buffer }).stdout ?? '').split('\n')[0]}\n`,
    );
  }
  return join(out, 'cli', 'main.js');
}

/** Environment for real Nix 2.8: private config and narinfo cache under `dir`. */
export function nixEnv(dir: string, options: { requireSigs?: boolean } = {}): NodeJS.ProcessEnv {
  const conf = join(dir, 'nixconf');
  mkdirSync(conf, { recursive: true });
  writeFileSync(
    join(conf, 'nix.conf'),
    `build-users-group =\nsandbox = false\nexperimental-features = nix-command\nsubstituters =\nrequire-sigs = ${options.requireSigs ?? true}\n`,
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NIX_CONF_DIR: conf,
    XDG_CACHE_HOME: join(dir, 'xdg'),
  };
  delete env['NIX_REMOTE'];
  return env;
}

export function nixVersion(): string {
  return (
    execFileSync('nix-store', ['--version'], { encoding: 'utf8' }).trim().split(' ').at(-1) ?? '?'
  );
}

/** One line naming the machine, for the report. */
export function machine(): string {
  const load = execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' })
    .split(' ')
    .slice(0, 3)
    .join(' ');
  return `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'CPU'}, Node ${process.version}, Nix ${nixVersion()}, load average at start ${load}`;
}
