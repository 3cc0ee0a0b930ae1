/**
 * Runs the built CLI (`node bin/strata`) as a user would. `npm test` builds first; a test run
 * without a build (plain `npx vitest`) builds once here.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const STRATA_BIN = join(REPO_ROOT, 'bin', 'strata');

function ensureBuilt(): void {
  if (existsSync(join(REPO_ROOT, 'dist', 'cli', 'main.js'))) return;
  spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: REPO_ROOT, stdio: 'inherit' });
}

export interface CliResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs `strata ARGS…` and collects its output; `input` is written to its stdin. */
export function runStrata(args: string[], options: { input?: string | Buffer; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<CliResult> {
  ensureBuilt();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [STRATA_BIN, ...args], {
      env: { ...process.env, ...options.env },
      cwd: options.cwd ?? REPO_ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() }));
    child.stdin.on('error', () => undefined); // The command may exit before reading all input.
    child.stdin.end(options.input);
  });
}

/** Like {@link runStrata} but fails the test with stderr when the exit code is not 0. */
export async function strataOk(args: string[], options: Parameters<typeof runStrata>[1] = {}): Promise<string> {
  const r = await runStrata(args, options);
  if (r.code !== 0) throw new Error(`strata ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout.toString();
}
