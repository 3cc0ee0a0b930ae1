/**
 * Substituting a 300-path closure into a fresh store: real Nix 2.8 (`nix-store -r`) vs
 * `strata copy -r`, both from the same server (strata serve, and nginx serving the same closure
 * as a static cache). Whole processes, each run into a new store with a new narinfo disk cache,
 * in interleaved rounds (the order rotated each round: this 2-core VM is shared and its load
 * moves by the minute); medians, bests, and each process's CPU time (user + system, from
 * /usr/bin/time), which the load moves less than wall time.
 *
 * Run: `npm run build && npx tsx bench/substitute.ts [--rounds 7]`.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { LocalStore } from '../src/store/local/local-store.js';
import { openStore } from '../src/store/open.js';
import { addChain, nixEnv, ROOT, startNginx, startStrata, writeStaticCache } from './_fixture.js';
import { numberOption } from './lib/args.js';
import { median, runMeasured } from './lib/timing.js';

const rounds = numberOption('--rounds', 7);
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

const work = mkdtempSync(join(tmpdir(), 'strata-bench-subst-'));
const storeRoot = join(work, 'store');
const store = (await openStore(storeRoot)) as LocalStore;
const chain = await addChain(store, 300);
const top = store.storeDir.print(chain.at(-1)!);
await writeStaticCache(store, [chain.at(-1)!], join(work, 'static'));
await store.close();

const stopNginx = await startNginx(work, join(work, 'static'), 18491);
const strata = await startStrata(storeRoot, 18492, ['--compression', 'none']);
const servers = { 'strata serve': strata.url, nginx: 'http://127.0.0.1:18491' };
let n = 0;
/** One run of each, into a fresh store: wall and CPU seconds. */
const runners = {
  nix: (url: string) =>
    runMeasured(['nix-store', '--store', join(work, `nix-${++n}`), '-r', top, '--option', 'substituters', url, '--option', 'require-sigs', 'false'], nixEnv(work)),
  strata: (url: string) =>
    runMeasured(
      [process.execPath, join(ROOT, 'bin', 'strata'), '--no-progress', '--quiet', '--no-require-sigs', 'copy', '--from', `${url}?ttl-negative=0&ttl-positive=0`, '--to', join(work, `strata-${++n}`), '-r', top],
      { ...process.env, XDG_CACHE_HOME: join(work, `xdg-${n}`) },
    ),
};
/** CPU seconds (user + system) a process has used so far, from /proc (10 ms ticks). */
const cpuOf = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};
const out: Record<string, unknown> = { rounds, loadBefore: load() };
try {
  for (const [name, url] of Object.entries(servers)) {
    const wall = { nix: [] as number[], strata: [] as number[] };
    const cpu = { nix: [] as number[], strata: [] as number[] };
    // strata serve's own CPU time during each client's runs (it shares the 2 cores with them).
    const serverCpu = { nix: [] as number[], strata: [] as number[] };
    // One unmeasured run each: the server's and the page cache's first touch.
    runners.nix(url);
    runners.strata(url);
    for (let r = 0; r < rounds; r++) {
      for (const who of r % 2 === 0 ? (['nix', 'strata'] as const) : (['strata', 'nix'] as const)) {
        // Nothing dirty in the page cache at the start: strata's durable publish ends with a
        // syncfs, which would otherwise also write back what the Nix run before it left.
        execFileSync('sync');
        const before = name === 'strata serve' ? cpuOf(strata.child.pid!) : 0;
        const m = runners[who](url);
        if (name === 'strata serve') serverCpu[who].push(cpuOf(strata.child.pid!) - before);
        wall[who].push(m.seconds);
        cpu[who].push(m.cpu);
      }
    }
    out[name] = {
      nixMedianS: median(wall.nix),
      strataMedianS: median(wall.strata),
      nixBestS: Math.min(...wall.nix),
      strataBestS: Math.min(...wall.strata),
      nixCpuMedianS: median(cpu.nix),
      strataCpuMedianS: median(cpu.strata),
      speedupMedian: median(wall.nix) / median(wall.strata),
      speedupBest: Math.min(...wall.nix) / Math.min(...wall.strata),
      nixRuns: wall.nix,
      strataRuns: wall.strata,
      ...(name === 'strata serve' ? { serverCpuDuringNixS: median(serverCpu.nix), serverCpuDuringStrataS: median(serverCpu.strata) } : {}),
    };
  }
  out['loadAfter'] = load();
  console.log(JSON.stringify(out, null, 2));
  const s = (x: number) => `${x.toFixed(2)} s`;
  for (const name of Object.keys(servers)) {
    const r = out[name] as {
      nixMedianS: number;
      strataMedianS: number;
      nixBestS: number;
      strataBestS: number;
      nixCpuMedianS: number;
      strataCpuMedianS: number;
      speedupMedian: number;
      speedupBest: number;
      serverCpuDuringNixS?: number;
      serverCpuDuringStrataS?: number;
    };
    console.log(
      `${name}: nix-store -r median ${s(r.nixMedianS)} (best ${s(r.nixBestS)}, CPU ${s(r.nixCpuMedianS)}), strata copy -r median ${s(r.strataMedianS)} (best ${s(r.strataBestS)}, CPU ${s(r.strataCpuMedianS)}): strata speed-up ${r.speedupMedian.toFixed(2)}x of medians, ${r.speedupBest.toFixed(2)}x of bests` +
        (name === 'strata serve' ? ` (target 1.5x: ${r.speedupMedian >= 1.5 ? 'met' : 'not met'})` : ''),
    );
    if (r.serverCpuDuringNixS !== undefined) {
      console.log(`  strata serve's own CPU per run (median): ${s(r.serverCpuDuringNixS)} answering nix-store -r, ${s(r.serverCpuDuringStrataS!)} answering strata copy -r`);
    }
  }
  console.log(`load average before ${out['loadBefore']}, after ${out['loadAfter']} (2 cores)`);
} finally {
  strata.stop();
  stopNginx();
  rmSync(work, { recursive: true, force: true });
}
