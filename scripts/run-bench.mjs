#!/usr/bin/env node
// Runs every benchmark under bench/ one after the other, with the arguments BENCHMARKS.md gives
// for it (most write their section with --write; serve and substitute print their tables).
// Pass names to run a subset: `npm run bench -- nar-hash realise`.
// Most need root (mounts, private /nix for real Nix) and take minutes each on 2 cores.
import { spawnSync } from 'node:child_process';

const ARGS = {
  'nar-hash': ['--write'],
  import: ['--write'],
  startup: ['--write'],
  layered: ['--write'],
  realise: ['--write'],
  serve: ['4'],
  substitute: [],
  env: ['--write'],
  s3: ['--runs', '3', '--write'],
};
const all = Object.keys(ARGS);
const chosen = process.argv.slice(2).length > 0 ? process.argv.slice(2) : all;
let failed = 0;
for (const name of chosen) {
  if (!all.includes(name)) {
    console.error(`unknown benchmark '${name}' (one of: ${all.join(', ')})`);
    process.exit(2);
  }
  console.log(`\n=== bench/${name}.ts`);
  const r = spawnSync('npx', ['tsx', `bench/${name}.ts`, ...ARGS[name]], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);
