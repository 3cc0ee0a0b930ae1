import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach } from 'vitest';

import { unmountUnder } from './mounts.js';

const made: string[] = [];

/** A fresh temporary directory, removed after the current test. */
export function tempDir(prefix = 'strata-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

afterEach(() => {
  for (const d of made.splice(0)) {
    unmountUnder(d);
    // Store objects are read-only; make them removable first.
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      spawnChmod(d);
      rmSync(d, { recursive: true, force: true });
    }
  }
});

function spawnChmod(dir: string): void {
  spawnSync('chmod', ['-R', 'u+w', dir]);
}
