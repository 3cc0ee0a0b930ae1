/**
 * Shared knobs of the torture suite. CI runs a small slice; `STRATA_TORTURE=full` (set by
 * `npm run torture`) runs the full counts. Every test reports what it did (trials run, inputs
 * fed, failures seen) so the full run can print one summary line for RELIABILITY.md.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { ROOT } from '../support/cli.js';

/** True for the full run (`npm run torture`). */
export const FULL = process.env['STRATA_TORTURE'] === 'full';

/** `ci` in CI, `full` in the full run; `STRATA_TORTURE_SCALE` multiplies either (for local soak runs). */
export function count(ci: number, full: number): number {
  const scale = Number(process.env['STRATA_TORTURE_SCALE'] ?? '1');
  return Math.max(
    1,
    Math.round((FULL ? full : ci) * (Number.isFinite(scale) && scale > 0 ? scale : 1)),
  );
}

/** Where the counts of a run go (one JSON object per line), read back by scripts/torture.mjs. */
export const REPORT_FILE =
  process.env['STRATA_TORTURE_REPORT'] ??
  join(ROOT, '.cache', 'torture', `ci-report-${process.ppid}.jsonl`);

/** Records what one torture test did. `failures` counts trials whose checks did not hold. */
export function record(
  test: string,
  what: { trials?: number; inputs?: number; failures?: number },
): void {
  mkdirSync(dirname(REPORT_FILE), { recursive: true });
  appendFileSync(
    REPORT_FILE,
    `${JSON.stringify({ test, trials: what.trials ?? 0, inputs: what.inputs ?? 0, failures: what.failures ?? 0, full: FULL, at: new Date().toISOString() })}\n`,
  );
}

/** A small seeded PRNG (mulberry32) so a failing trial can be replayed from its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed of this run: `STRATA_TORTURE_SEED`, else the time (printed on failure by the tests). */
export const SEED = Number(process.env['STRATA_TORTURE_SEED'] ?? Date.now() % 2 ** 31);

/** Per-test timeout: the CI slice must fit in minutes, the full run may take much longer. */
export const TIMEOUT = FULL ? 4 * 60 * 60_000 : 5 * 60_000;
