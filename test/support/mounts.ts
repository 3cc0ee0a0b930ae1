/**
 * Mount hygiene for tests that mount overlays for real (CI runs as root): everything mounted
 * under a test's temp dir is unmounted after the test, even when it failed.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Unmounts every mount at or below `dir`, deepest first. */
export function unmountUnder(dir: string): void {
  for (let round = 0; round < 5; round++) {
    const targets = readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
      .filter((t): t is string => t !== undefined && (t === dir || t.startsWith(`${dir}/`)));
    if (targets.length === 0) return;
    for (const t of targets.sort((a, b) => b.length - a.length)) spawnSync('umount', ['--lazy', t]);
  }
}

export const isRoot = process.getuid?.() === 0;
