/**
 * Timing: in-process (hrtime around a function) and whole-process (hyperfine when installed,
 * else spawn + wall clock), always as medians, and interleaved: this 2-core VM is shared, and
 * its load changes by the minute, so running A then B in separate blocks would compare two
 * different machines. Rounds alternate the candidates, each round's order rotated.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Seconds taken by `fn` (awaited). */
export async function time(fn: () => unknown): Promise<number> {
  return (await timeCpu(fn)).seconds;
}

/** Wall seconds and this process's CPU seconds (user + system, all threads) taken by `fn`. */
export async function timeCpu(fn: () => unknown): Promise<{ seconds: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await fn();
  const c = process.cpuUsage(c0);
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, cpu: (c.user + c.system) / 1e6 };
}

export interface Candidate {
  name: string;
  /** argv; the first element is the program. */
  argv: string[];
  env?: NodeJS.ProcessEnv;
}

export interface ProcessTiming {
  /** Wall seconds of each run. */
  wall: number[];
  /** user + system CPU seconds of each run. */
  cpu: number[];
}

export function haveHyperfine(): boolean {
  return spawnSync('hyperfine', ['--version']).status === 0;
}

function quote(a: string): string {
  return /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

/**
 * Times whole processes: `rounds` rounds, each running every candidate `perRound` times (after
 * one warm-up), with hyperfine (`-N`, no shell) when it is installed. Returns per-candidate runs.
 */
export function timeProcesses(
  candidates: Candidate[],
  rounds: number,
  perRound: number,
): Map<string, ProcessTiming> {
  const out = new Map(
    candidates.map((c) => [c.name, { wall: [] as number[], cpu: [] as number[] }]),
  );
  const hf = haveHyperfine();
  const json = join(tmpdir(), `strata-bench-${process.pid}.json`);
  for (let r = 0; r < rounds; r++) {
    const order = candidates.map((_, i) => candidates[(i + r) % candidates.length]!);
    for (const c of order) {
      const t = out.get(c.name)!;
      if (hf) {
        const res = spawnSync(
          'hyperfine',
          [
            '-N',
            '--warmup',
            '1',
            '--runs',
            String(perRound),
            '--export-json',
            json,
            '--style',
            'none',
            c.argv.map(quote).join(' '),
          ],
          {
            env: c.env ?? process.env,
            encoding: 'utf8',
          },
        );
        if (res.status !== 0 || !existsSync(json))
          throw new Error(`hyperfine failed for ${c.name}: ${res.stderr}`);
        const result = (
          JSON.parse(readFileSync(json, 'utf8')) as {
            results: { times: number[]; user: number; system: number }[];
          }
        ).results[0]!;
        t.wall.push(...result.times);
        // hyperfine reports mean user/system per command; spread it over the round's runs.
        for (let i = 0; i < result.times.length; i++) t.cpu.push(result.user + result.system);
        rmSync(json, { force: true });
      } else {
        for (let i = 0; i <= perRound; i++) {
          const t0 = process.hrtime.bigint();
          const before = process.resourceUsage();
          const res = spawnSync(c.argv[0]!, c.argv.slice(1), {
            env: c.env ?? process.env,
            stdio: 'ignore',
          });
          const wall = Number(process.hrtime.bigint() - t0) / 1e9;
          if (res.status !== 0) throw new Error(`${c.name} exited ${res.status}`);
          if (i === 0) continue; // warm-up
          const after = process.resourceUsage();
          t.wall.push(wall);
          t.cpu.push(
            (after.userCPUTime - before.userCPUTime + after.systemCPUTime - before.systemCPUTime) /
              1e6,
          );
        }
      }
    }
  }
  return out;
}

/** Runs one process, returning wall seconds, its peak RSS (KiB) and the bytes it wrote to disk. */
export function runMeasured(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  input?: string | Buffer,
): { seconds: number; cpu: number; rssKiB: number; writeBytes: number; stdout: string } {
  const before = ioWriteBytes();
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M %U %S', ...argv], {
    env,
    encoding: 'utf8',
    maxBuffer: 1 << 28,
    input,
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
  // Reaped children's I/O is added to the parent's /proc/self/io (kernel: wait_task_zombie).
  const writeBytes = ioWriteBytes() - before;
  const [rss, user, sys] = r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number);
  return { seconds, cpu: user! + sys!, rssKiB: rss!, writeBytes, stdout: r.stdout };
}

/** `write_bytes` of this process and its reaped children: bytes sent towards the block layer. */
export function ioWriteBytes(): number {
  const m = /^write_bytes: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'));
  return Number(m?.[1] ?? 0);
}

/**
 * Minor page faults of one run of `argv` (GNU time's `%R`), the median of `runs`; undefined
 * without /usr/bin/time. Reported beside start-up timings because on this VM (paravirtualised)
 * each fault costs ~20 µs of CPU ({@link pageFaultCost}), and unlike time the count does not move with the load.
 */
export function pageFaults(c: Candidate, runs = 5): number | undefined {
  if (!existsSync('/usr/bin/time')) return undefined;
  const counts: number[] = [];
  for (let i = 0; i < runs; i++) {
    const r = spawnSync('/usr/bin/time', ['-f', 'faults %R', ...c.argv], {
      env: c.env ?? process.env,
      encoding: 'utf8',
    });
    const m = /faults (\d+)\s*$/.exec(r.stderr);
    if (r.status !== 0 || !m) return undefined;
    counts.push(Number(m[1]));
  }
  return median(counts);
}

/**
 * CPU microseconds one minor page fault costs on this machine: `node` touching `pages` fresh
 * pages against `node` only allocating them, the CPU difference over the fault difference
 * (medians of 5 runs of each, GNU time). Undefined without /usr/bin/time.
 */
export function pageFaultCost(pages = 20_000): number | undefined {
  if (!existsSync('/usr/bin/time')) return undefined;
  const run = (touch: boolean) => {
    const cpu: number[] = [];
    const faults: number[] = [];
    for (let i = 0; i < 5; i++) {
      const script = `const b = Buffer.allocUnsafeSlow(${pages * 4096});${touch ? ' for (let i = 0; i < b.length; i += 4096) b[i] = 1;' : ''}`;
      const r = spawnSync('/usr/bin/time', ['-f', 'cost %U %S %R', process.execPath, '-e', script], { encoding: 'utf8' });
      const m = /cost ([\d.]+) ([\d.]+) (\d+)\s*$/.exec(r.stderr);
      if (r.status !== 0 || !m) return undefined;
      cpu.push(Number(m[1]) + Number(m[2]));
      faults.push(Number(m[3]));
    }
    return { cpu: median(cpu), faults: median(faults) };
  };
  const touched = run(true);
  const untouched = run(false);
  if (!touched || !untouched || touched.faults <= untouched.faults) return undefined;
  return ((touched.cpu - untouched.cpu) * 1e6) / (touched.faults - untouched.faults);
}
