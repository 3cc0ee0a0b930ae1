/**
 * Realising 200 trivial derivations — a chain of 100 (each refers to the one before) and a fan
 * of 100 independent ones — with `strata realise` and with real Nix 2.8 `nix-store -r`, the same
 * number of jobs. Every run starts from a fresh store holding only the `.drv` files (written by
 * real `nix-instantiate --store DIR`), so everything is built.
 *
 * Nix runs without sandbox: a chroot store would force it, so (formats.md §1) it runs in its own
 * mount namespace with the store's `nix` dir bind-mounted on `/nix` (`unshare -m`), where the
 * store is at its logical path. strata builds into the chroot store itself (builds in a private
 * mount namespace where the store is an overlay at its logical path). Both are whole processes
 * timed from spawn to exit, strata and Nix alternating so both see the same machine load.
 * Median of 3.
 *
 * Run: `npm run build && npx tsx bench/realise.ts [--write]` (`--write` updates BENCHMARKS.md).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { nixEnv } from './lib/env.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DATA = join(ROOT, '.cache', 'bench', 'realise');
const RUNS = 3;
const N = 100;


/** The expression: `chain` (top of a chain of N) and `fan` (a list of N independent ones). */
function expression(): string {
  return `let
  mk = name: script: derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; };
  chain = n: if n == 0 then mk "chain-0" "echo 0 > $out" else mk "chain-\${toString n}" "echo \${chain (n - 1)} > $out";
in {
  chain = chain ${N - 1};
  fan = builtins.genList (i: mk "fan-\${toString i}" "echo \${toString i} > $out") ${N};
}
`;
}

/** A fresh chroot store at `dir` holding the drvs of `attr`; returns the drv paths. */
function instantiate(dir: string, attr: string): string[] {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const r = spawnSync('nix-instantiate', ['--store', dir, join(DATA, 'default.nix'), '-A', attr], {
    env: nixEnv(DATA),
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`nix-instantiate failed: ${r.stderr}`);
  return r.stdout.trim().split('\n');
}

function timed(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): { seconds: number; out: string } {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { env, encoding: 'utf8', maxBuffer: 1 << 24 });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.slice(0, 4).join(' ')} failed: ${r.stderr.slice(-2000)}`);
  return { seconds, out: r.stdout };
}

function strataRun(attr: string, jobs: number, i: number): { seconds: number; out: string } {
  const dir = join(DATA, `strata-${attr}-${jobs}-${i}`);
  const drvs = instantiate(dir, attr);
  return timed(
    process.execPath,
    [
      join(ROOT, 'bin', 'strata'),
      '--store',
      dir,
      '--quiet',
      'realise',
      '-j',
      String(jobs),
      ...drvs,
    ],
    process.env,
  );
}

function nixRun(attr: string, jobs: number, i: number): { seconds: number; out: string } {
  const dir = join(DATA, `nix-${attr}-${jobs}-${i}`);
  const drvs = instantiate(dir, attr);
  // A private /nix: the chroot store's nix dir at the logical path, so no sandbox is forced.
  const script = 'mount --bind "$1/nix" /nix && shift && exec nix-store -r --quiet "$@"';
  return timed(
    'unshare',
    ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', dir, '-j', String(jobs), ...drvs],
    nixEnv(DATA),
  );
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}

interface Row {
  label: string;
  strata: number[];
  nix: number[];
}

function main(): void {
  mkdirSync(DATA, { recursive: true });
  writeFileSync(join(DATA, 'default.nix'), expression());
  const rows: Row[] = [];
  for (const [attr, jobs] of [
    ['chain', 1],
    ['chain', 2],
    ['fan', 1],
    ['fan', 2],
  ] as const) {
    const row: Row = { label: `${attr} of ${N}, -j ${jobs}`, strata: [], nix: [] };
    for (let i = 0; i < RUNS; i++) {
      const s = strataRun(attr, jobs, i);
      const n = nixRun(attr, jobs, i);
      // Same derivations, same outputs.
      if (s.out.trim().split('\n').sort().join() !== n.out.trim().split('\n').sort().join())
        throw new Error(`outputs differ for ${row.label}`);
      row.strata.push(s.seconds);
      row.nix.push(n.seconds);
    }
    rows.push(row);
    process.stderr.write(
      `${row.label}: strata ${median(row.strata).toFixed(2)} s, nix ${median(row.nix).toFixed(2)} s\n`,
    );
  }
  const fan1 = rows.find((r) => r.label.startsWith('fan') && r.label.endsWith('-j 1'))!;
  const fan2 = rows.find((r) => r.label.startsWith('fan') && r.label.endsWith('-j 2'))!;
  const f = (x: number): string => x.toFixed(2);
  const lines = [
    '## Builds',
    '',
    `Command: \`npm run build && npx tsx bench/realise.ts --write\` (${cpus().length} × ${cpus()[0]?.model.trim() ?? 'CPU'}, Node ${process.version}).`,
    `${N} trivial \`/bin/sh\` derivations per run, from a fresh store holding only the \`.drv\` files (real \`nix-instantiate --store DIR\`); every output is built.`,
    'strata: `strata --store DIR realise -j J DRVS…` (builds in one private mount namespace per run, the store an overlay at `/nix/store`, builders forked by a small Perl spawner inside it).',
    "Nix 2.8: `unshare -m sh -c 'mount --bind DIR/nix /nix && nix-store -r -j J DRVS…'` with `sandbox = false` (a private `/nix`, so no sandbox is forced).",
    `Whole processes timed from spawn to exit, strata and Nix alternating; median of 3. Load average when the run ended: ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores (the VM is shared, so absolute times vary by ±50 %; compare the ratios).`,
    '',
    '| workload | strata | nix-store -r 2.8 | strata / nix time |',
    '|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.label} | ${f(median(r.strata))} s | ${f(median(r.nix))} s | ${f(median(r.strata) / median(r.nix))} |`,
    ),
    '',
    `Fan speed-up from -j 1 to -j 2: strata ${f(median(fan1.strata) / median(fan2.strata))}×, Nix ${f(median(fan1.nix) / median(fan2.nix))}×.`,
    `All runs (s): ${rows.map((r) => `${r.label}: strata ${r.strata.map(f).join(', ')}; nix ${r.nix.map(f).join(', ')}`).join(' — ')}`,
    '',
  ];
  const section = lines.join('\n');
  process.stdout.write(`${section}\n`);
  if (process.argv.includes('--write')) {
    const file = join(ROOT, 'BENCHMARKS.md');
    const text = readFileSync(file, 'utf8');
    // Replace only our section: from "## Builds" to the next "## " heading (or the end).
    const start = text.indexOf('\n## Builds\n');
    let next: string;
    if (start < 0) next = `${text.replace(/\n*$/, '\n')}\n${section}`;
    else {
      const after = text.indexOf('\n## ', start + 1);
      next = `${text.slice(0, start + 1)}${section}${after < 0 ? '' : `\n${text.slice(after + 1)}`}`;
    }
    writeFileSync(file, next);
  }
  for (const d of ['strata', 'nix'])
    for (const a of ['chain', 'fan'])
      for (const j of [1, 2])
        for (let i = 0; i < RUNS; i++)
          rmSync(join(DATA, `${d}-${a}-${j}-${i}`), { recursive: true, force: true });
}

main();
