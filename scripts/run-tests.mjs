#!/usr/bin/env node
// Runs the whole vitest suite and prints the plain `N passed, N failed` line CI reads.
// Extra arguments go to vitest (e.g. a file filter).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';

const report = '.cache/vitest-report.json';
mkdirSync('.cache', { recursive: true });
rmSync(report, { force: true });
const run = spawnSync(
  'npx',
  ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile=${report}`, ...process.argv.slice(2)],
  { stdio: 'inherit' },
);
let passed = 0;
let failed = 0;
let skipped = 0;
try {
  const r = JSON.parse(readFileSync(report, 'utf8'));
  passed = r.numPassedTests;
  failed = r.numFailedTests + (r.numRuntimeErrorTestSuites ?? 0);
  skipped = r.numPendingTests + r.numTodoTests;
  // A test file that fails to load has no tests but must still count as a failure.
  for (const f of r.testResults ?? []) if (f.status === 'failed' && f.assertionResults.length === 0) failed++;
} catch {
  failed = Math.max(failed, 1);
}
// Errors outside any test (an uncaught exception, an unhandled rejection) fail vitest's run but
// appear in no count of the report: the line must not say 0 failed then.
if (run.status !== 0 && failed === 0) {
  console.log(`vitest exited ${run.status} with no failed test (errors outside the tests, above): counted as 1 failure`);
  failed = 1;
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(run.status === 0 && failed === 0 && passed > 0 ? 0 : 1);
