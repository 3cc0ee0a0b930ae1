#!/usr/bin/env node
// The full torture run (issue 8): every test under test/torture with STRATA_TORTURE=full counts,
// then one summary of what was done (trials, inputs, failures) from the tests' own reports.
// Extra arguments go to vitest (e.g. a file filter). The CI slice is the same files at small
// counts, run by `npm test`.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

// A report of this run only (CI runs beside it write elsewhere); rows of the full counts only.
const report = `.cache/torture/report-${process.pid}.jsonl`;
const vitestReport = '.cache/torture/vitest.json';
mkdirSync('.cache/torture', { recursive: true });
rmSync(report, { force: true });
rmSync(vitestReport, { force: true });
const seed = process.env.STRATA_TORTURE_SEED ?? String(Date.now() % 2 ** 31);
const started = Date.now();
const run = spawnSync(
  'npx',
  [
    'vitest',
    'run',
    'test/torture',
    '--reporter=default',
    '--reporter=json',
    `--outputFile=${vitestReport}`,
    ...process.argv.slice(2),
  ],
  {
    stdio: 'inherit',
    env: {
      ...process.env,
      STRATA_TORTURE: 'full',
      STRATA_TORTURE_REPORT: report,
      STRATA_TORTURE_SEED: seed,
    },
  },
);
let rows = [];
try {
  rows = readFileSync(report, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((r) => r.full);
} catch {
  // No test reported anything: counted as a failure below.
}
let failedTests = 1;
let passedTests = 0;
try {
  const r = JSON.parse(readFileSync(vitestReport, 'utf8'));
  failedTests = r.numFailedTests + (r.numRuntimeErrorTestSuites ?? 0);
  passedTests = r.numPassedTests;
} catch {
  // vitest did not finish.
}
const sum = (k) => rows.reduce((s, r) => s + r[k], 0);
const summary = {
  command: 'npm run torture',
  seed: Number(seed),
  minutes: Math.round((Date.now() - started) / 600) / 100,
  tests: { passed: passedTests, failed: failedTests },
  trials: sum('trials'),
  inputs: sum('inputs'),
  failures: sum('failures') + failedTests,
  parts: rows.map(({ test, trials, inputs, failures }) => ({ test, trials, inputs, failures })),
};
writeFileSync('.cache/torture/summary.json', `${JSON.stringify(summary, null, 2)}\n`);
console.log('\ntorture summary');
for (const p of summary.parts)
  console.log(
    `  ${p.test}: ${p.trials ? `${p.trials} trials` : ''}${p.trials && p.inputs ? ', ' : ''}${p.inputs ? `${p.inputs} inputs` : ''}, ${p.failures} failures`,
  );
console.log(
  `trials: ${summary.trials}, inputs: ${summary.inputs}, failures: ${summary.failures} (seed ${seed}, ${summary.minutes} min, ${passedTests} tests passed, ${failedTests} failed)`,
);
process.exit(run.status === 0 && summary.failures === 0 ? 0 : 1);
