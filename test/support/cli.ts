/**
 * Runs the built CLI (`node bin/strata`) the way a user would. `ensureBuilt()` compiles dist/
 * when it is missing or older than the sources, so CLI tests also work without `npm test`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { tempDir } from './tmp.js';

/** The repository root. */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** Builds dist/ unless it is newer than every file in src/. Others' type errors do not stop tsc from emitting. */
export function ensureBuilt(): void {
  const main = join(ROOT, 'dist', 'cli', 'main.js');
  const bundle = join(ROOT, 'dist', 'strata.cjs');
  const fresh = existsSync(main) && statSync(main).mtimeMs >= newestMtime(join(ROOT, 'src')) && existsSync(join(ROOT, 'dist', 'cli', 'commands', 'hash.js'));
  // The bundle too, as users run it: after a tsc-only build bin/strata falls back to the modules.
  if (fresh && existsSync(bundle) && statSync(bundle).mtimeMs >= statSync(main).mtimeMs) return;
  spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'ignore' });
  if (!existsSync(main)) throw new Error('npm run build did not produce dist/cli/main.js');
}

/** What a CLI run produced. */
export interface StrataRun {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Spawns `node bin/strata ...args`, feeding `input` on stdin. */
export function runStrata(args: string[], options: { input?: Buffer | string; env?: Record<string, string> } = {}): Promise<StrataRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'strata'), ...args], {
      cwd: ROOT,
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.stdin.on('error', () => {}); // the CLI may exit before reading all input
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') }));
    child.stdin.end(options.input ?? '');
  });
}

/** Like {@link runStrata} (building first if needed), but throws with stderr unless it exits 0. */
export async function strataOk(args: string[], options: Parameters<typeof runStrata>[1] = {}): Promise<string> {
  ensureBuilt();
  const r = await runStrata(args, options);
  if (r.code !== 0) throw new Error(`strata ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout.toString();
}

/** {@link runStrata}, and the list of Node built-in modules the run loaded (`process.moduleLoadList`). */
export async function runStrataListingModules(args: string[]): Promise<{ run: StrataRun; modules: string[] }> {
  const dir = tempDir();
  const out = join(dir, 'modules.json');
  const probe = join(dir, 'probe.cjs');
  writeFileSync(
    probe,
    `process.on('exit', () => require('fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify(process.moduleLoadList)));\n`,
  );
  const run = await runStrata(args, { env: { NODE_OPTIONS: `--require ${probe}` } });
  return { run, modules: JSON.parse(readFileSync(out, 'utf8')) as string[] };
}
