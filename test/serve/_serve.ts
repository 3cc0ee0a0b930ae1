/** Helpers for serve tests: a local store filled from the vectors, real Nix runs (async). */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';

import { copyPaths } from '../../src/store/copy.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { nixEnv } from '../support/nix.js';
import { PUBLIC_KEY, writeVectorCache } from '../binary-cache/_cache.js';

/** A local strata store at `work/local` holding every vector path (unsigned paths keep Nix's sigs). */
export async function filledStore(work: string): Promise<LocalStore> {
  writeVectorCache(join(work, 'vcache'), 'xz');
  const cache = await openStore(`file://${join(work, 'vcache')}`);
  const local = (await openStore(join(work, 'local'))) as LocalStore;
  try {
    await copyPaths(cache, local, await cache.queryAllValidPaths(), { recursive: true, trustedPublicKeys: [PUBLIC_KEY] });
  } finally {
    await cache.close();
  }
  return local;
}

/** Runs real Nix without blocking the event loop (the server under test lives in this process). */
export function nixAsync(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const xdg = mkdtempSync(join(nixEnv()['XDG_CACHE_HOME']!, 'run-'));
    const child = spawn(command, args, { env: { ...nixEnv(), XDG_CACHE_HOME: xdg, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}
