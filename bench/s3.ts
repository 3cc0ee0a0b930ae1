/**
 * bench/s3.ts — pushing and pulling a 300-path closure through strata's s3:// cache vs the raw
 * S3 throughput of the same bytes with the SDK alone (the floor), on a real S3 server (Ceph RGW
 * on loopback, started by ../shared/tools/s3-local.sh unless S3_BENCH_ENV names the `env` file
 * of a running one). Target: strata ≥ 70 % of the floor both ways.
 *
 *   npx tsx bench/s3.ts [--runs 5] [--write]
 *
 * The closure is a seeded random DAG (each path refers to up to 3 earlier ones, the top to all
 * the rest) of incompressible files, 4 KiB-2 MiB log-uniform plus three 16 MiB ones, pushed with
 * compression=none so both sides move identical bytes. It is built once and kept in
 * .cache/bench/s3 (same seed, same paths) for later runs.
 *
 * Floor push: PUT each NAR from a file then its narinfo, 8 at once (strata's default -j). Floor
 * pull: GET each narinfo then its NAR, 8 at once, bytes discarded. strata push: copyPaths local →
 * s3. strata pull: copyPaths s3 → a fresh local store (verify, unpack, register). Both sides use
 * the same S3Client configuration (strata's own, taken from an S3Transport), so connection
 * reuse, socket limits and checksum settings are equal.
 *
 * The RGW shares this machine's 2 cores with the client, so every CPU second the client spends
 * is one the server does not get: each phase also records the client's CPU time and the
 * gateway's (from /proc). Rounds alternate which side goes first; the figure reported is the
 * median of the per-round ratios (each round's strata and floor ran minutes apart at most) and
 * the ratio of medians beside it.
 */
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { DeleteBucketCommand, DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';

import type { StorePath } from '../src/core/store-path.js';
import { S3Transport } from '../src/store/binary-cache/s3-transport.js';
import { computeClosure } from '../src/store/closure.js';
import { copyPaths } from '../src/store/copy.js';
import type { LocalStore } from '../src/store/local/local-store.js';
import { openStore } from '../src/store/open.js';
import { listObjects, makeBucket, type S3Server, s3Uri, startS3, stopS3 } from '../test/s3/_s3.js';
import { flag, numberOption } from './lib/args.js';

const ROOT = join(import.meta.dirname, '..');
const RUNS = numberOption('--runs', 5);
const WRITE = flag('--write');
const JOBS = 8;
const N = 300;
// Bump when the closure generator changes, so a cached closure is rebuilt.
const CLOSURE_VERSION = 1;

/** mulberry32: a seeded PRNG so every run builds the same closure. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bytes(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i += 4) b.writeUInt32LE((rand() * 4294967296) >>> 0, Math.min(i, n - 4));
  return b;
}

/** One path of the closure as the floor moves it: its NAR in a file, a narinfo-sized text. */
interface FloorObject {
  nar: string;
  size: number;
  key: string;
  infoSize: number;
}

interface Closure {
  version: number;
  top: string;
  objects: FloorObject[];
}

async function buildClosure(work: string): Promise<Closure> {
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const store = (await openStore(join(work, 'src'))) as LocalStore;
  const rand = rng(42);
  const paths: StorePath[] = [];
  const referenced = new Set<number>();
  for (let i = 0; i < N - 1; i++) {
    const size = i % 100 === 50 ? 16 << 20 : Math.round(4096 * Math.pow(512, rand()));
    const refs = new Set<number>();
    for (let k = 0; k < 3 && i > 0; k++) if (rand() < 0.6) refs.add(Math.floor(rand() * i));
    for (const r of refs) referenced.add(r);
    const dir = join(work, 'tmp', String(i));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'data'), bytes(rand, size));
    writeFileSync(join(dir, 'refs'), [...refs].map((r) => store.storeDir.print(paths[r]!)).join('\n'));
    paths.push((await store.addPath(dir, { name: `bench-${i}`, references: [...refs].map((r) => paths[r]!) })).path);
    rmSync(dir, { recursive: true });
  }
  const rest = paths.filter((_, i) => !referenced.has(i));
  const top = (await store.addText('bench-top', rest.map((p) => store.storeDir.print(p)).join('\n'), rest)).path;
  paths.push(top);
  const narDir = join(work, 'nars');
  mkdirSync(narDir);
  const objects: FloorObject[] = [];
  for (const p of paths) {
    const file = join(narDir, p.hashPart);
    await pipeline(await store.narFromPath(p), createWriteStream(file));
    const info = (await store.queryPathInfo(p))!;
    objects.push({ nar: file, size: info.narSize, key: p.hashPart, infoSize: 600 + 60 * info.references.length });
  }
  await store.close();
  const closure: Closure = { version: CLOSURE_VERSION, top: store.storeDir.print(top), objects };
  writeFileSync(join(work, 'closure.json'), JSON.stringify(closure));
  return closure;
}

/** The cached closure when it is complete and current, else a fresh one. */
async function loadClosure(work: string): Promise<Closure> {
  try {
    const c = JSON.parse(readFileSync(join(work, 'closure.json'), 'utf8')) as Closure;
    if (c.version === CLOSURE_VERSION && c.objects.length === N && c.objects.every((o) => existsSync(o.nar))) return c;
  } catch {
    // missing or unreadable: build it
  }
  process.stderr.write(`building the ${N}-path closure…\n`);
  return buildClosure(work);
}

/** Runs `fn` over `items`, `limit` at a time. */
async function pool<T>(items: T[], limit: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => { while (next < items.length) await fn(items[next++]!); }));
}

const sink = () => new Writable({ write: (_c, _e, cb) => cb() });

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** CPU seconds (user + system) of a process, from /proc; 0 when it cannot be read. */
function procCpu(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

interface Sample {
  wall: number;
  cpu: number;
  rgw: number;
}

async function measure(rgwPid: number | undefined, fn: () => Promise<void>): Promise<Sample> {
  const c0 = process.cpuUsage();
  const r0 = procCpu(rgwPid);
  const t0 = performance.now();
  await fn();
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1e6, rgw: procCpu(rgwPid) - r0 };
}

/** Empties and removes a bucket: the test server's memstore holds 1.5 GiB, a round uses 0.3. */
async function dropBucket(server: S3Server, client: S3Client, bucket: string): Promise<void> {
  const keys = [...(await listObjects(server, bucket)).keys()];
  await pool(keys, 16, async (Key) => void (await client.send(new DeleteObjectCommand({ Bucket: bucket, Key }))));
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

type Phase = 'floorPush' | 'strataPush' | 'floorPull' | 'strataPull' | 'strataRead';

async function main(): Promise<void> {
  const work = join(ROOT, '.cache', 'bench', 's3');
  mkdirSync(work, { recursive: true });
  let s3: S3Server;
  const envFile = process.env['S3_BENCH_ENV'];
  if (envFile) {
    const env = Object.fromEntries(readFileSync(envFile, 'utf8').trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    const { S3Client } = await import('@aws-sdk/client-s3');
    process.env['AWS_ACCESS_KEY_ID'] = env['ACCESS_KEY'];
    process.env['AWS_SECRET_ACCESS_KEY'] = env['SECRET_KEY'];
    process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';
    const url = new URL(env['ENDPOINT']!);
    const client = new S3Client({ endpoint: env['ENDPOINT'], region: env['REGION'], forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
    s3 = { dir: dirname(envFile), endpoint: env['ENDPOINT']!, hostPort: url.host, port: Number(url.port), accessKey: env['ACCESS_KEY']!, secretKey: env['SECRET_KEY']!, region: env['REGION']!, client };
  } else {
    process.stderr.write('starting Ceph RGW (s3-local.sh)…\n');
    s3 = startS3();
  }
  const server = s3;
  let rgwPid: number | undefined = Number(readFileSync(join(server.dir, 'run', 'client.rgw.x.pid'), 'utf8').trim());
  if (!(rgwPid > 0)) rgwPid = undefined;
  // The floor talks through strata's own client configuration (keep-alive, 32 sockets, checksums
  // only where the API requires them): the comparison is about what strata does per path.
  const floorTransport = new S3Transport({ bucket: 'unused', endpoint: server.endpoint, region: server.region, credentials: { accessKeyId: server.accessKey, secretAccessKey: server.secretKey } });
  const client: S3Client = floorTransport.client;
  const loadStart = loadavg();
  try {
    const closure = await loadClosure(work);
    const { objects } = closure;
    const store = (await openStore(join(work, 'src'))) as LocalStore;
    const top = store.storeDir.parse(closure.top);
    const total = objects.reduce((s, o) => s + o.size, 0);
    process.stderr.write(`closure: ${objects.length} paths, ${(total / 1048576).toFixed(1)} MiB of NARs\n`);

    const results: Record<Phase, Sample[]> = { floorPush: [], strataPush: [], floorPull: [], strataPull: [], strataRead: [] };
    for (let run = 0; run < RUNS; run++) {
      const fb = await makeBucket(server, 'bench-floor');
      const sb = await makeBucket(server, 'bench-strata');
      const uri = s3Uri(server, sb, '&compression=none');
      const floorPush = async () => {
        await pool(objects, JOBS, async (o) => {
          await client.send(new PutObjectCommand({ Bucket: fb, Key: `nar/${o.key}.nar`, Body: createReadStream(o.nar, { highWaterMark: 1 << 20 }), ContentLength: o.size }));
          await client.send(new PutObjectCommand({ Bucket: fb, Key: `${o.key}.narinfo`, Body: Buffer.alloc(o.infoSize, 'x') }));
        });
      };
      const strataPush = async () => {
        const cache = await openStore(uri);
        const pushed = await copyPaths(store, cache, [top], { recursive: true, concurrency: JOBS });
        await cache.close();
        if (pushed.copied.length !== N) throw new Error(`pushed ${pushed.copied.length} paths, not ${N}`);
      };
      const floorPull = async () => {
        await pool(objects, JOBS, async (o) => {
          const ni = await client.send(new GetObjectCommand({ Bucket: fb, Key: `${o.key}.narinfo` }));
          await ni.Body!.transformToByteArray();
          const nar = await client.send(new GetObjectCommand({ Bucket: fb, Key: `nar/${o.key}.nar` }));
          await pipeline(nar.Body as NodeJS.ReadableStream, sink());
        });
      };
      // Each pull opens the cache with its own, empty narinfo disk cache: nothing remembered.
      const freshCache = async (tag: string) => {
        process.env['XDG_CACHE_HOME'] = join(work, `xdg-${run}-${tag}`);
        return openStore(uri);
      };
      const strataPull = async () => {
        const from = await freshCache('pull');
        const dstDir = join(work, `dst-${run}`);
        const dst = await openStore(dstDir);
        const pulled = await copyPaths(from, dst, [top], { recursive: true, concurrency: JOBS, requireSigs: false });
        await from.close();
        await dst.close();
        rmSync(dstDir, { recursive: true, force: true });
        if (pulled.copied.length !== N) throw new Error(`pulled ${pulled.copied.length} paths, not ${N}`);
      };
      // The cache side of a pull alone: narinfos, then every NAR fetched and verified (NarHash,
      // FileHash), 8 at once, into nothing; what is left of strataPull is the local store's.
      const strataRead = async () => {
        const from = await freshCache('read');
        const infos = [...(await computeClosure(from, [top])).values()];
        await pool(infos, JOBS, async (i) => pipeline(await from.narFromPath(i.path), sink()));
        await from.close();
      };
      // Alternate who goes first, so a load spike does not always hit the same side.
      const order = <T>(a: T, b: T): T[] => (run % 2 === 0 ? [a, b] : [b, a]);
      for (const [name, fn] of order<[Phase, () => Promise<void>]>(['floorPush', floorPush], ['strataPush', strataPush])) results[name].push(await measure(rgwPid, fn));
      for (const [name, fn] of order<[Phase, () => Promise<void>]>(['floorPull', floorPull], ['strataPull', strataPull])) results[name].push(await measure(rgwPid, fn));
      results.strataRead.push(await measure(rgwPid, strataRead));
      await dropBucket(server, client, fb);
      await dropBucket(server, client, sb);
      rmSync(join(work, `xdg-${run}-pull`), { recursive: true, force: true });
      rmSync(join(work, `xdg-${run}-read`), { recursive: true, force: true });
      const w = (p: Phase) => results[p].at(-1)!.wall.toFixed(2);
      process.stderr.write(`run ${run + 1}: push floor ${w('floorPush')} s, strata ${w('strataPush')} s; pull floor ${w('floorPull')} s, strata ${w('strataPull')} s (cache side alone ${w('strataRead')} s); load ${loadavg()[0]!.toFixed(1)}\n`);
    }
    await store.close();
    const loadEnd = loadavg();

    const mibs = (s: number) => (total / 1048576 / s).toFixed(1);
    const med = (p: Phase, k: keyof Sample) => median(results[p].map((x) => x[k]));
    const pct = (x: number) => `${(x * 100).toFixed(0)} %`;
    const paired = (floor: Phase, strata: Phase) => median(results[floor].map((f, i) => f.wall / results[strata][i]!.wall));
    const row = (what: string, floor: Phase, strata: Phase) => {
      const f = med(floor, 'wall');
      const s = med(strata, 'wall');
      return `| ${what} | ${f.toFixed(2)} s (${mibs(f)} MiB/s) | ${s.toFixed(2)} s (${mibs(s)} MiB/s) | **${pct(paired(floor, strata))}** | ${pct(f / s)} | ${med(floor, 'cpu').toFixed(2)} s / ${med(strata, 'cpu').toFixed(2)} s | ${med(floor, 'rgw').toFixed(2)} s / ${med(strata, 'rgw').toFixed(2)} s |`;
    };
    const all = (p: Phase) => results[p].map((x) => x.wall.toFixed(2)).join(', ');
    const load = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
    const section = [
      '## S3',
      '',
      `Command: \`npm run build && npx tsx bench/s3.ts --runs ${RUNS} --write\` (2 × AMD EPYC, Node ${process.version}; Ceph 16.2 RGW from Debian on loopback, memstore, started by \`../shared/tools/s3-local.sh\`; load average ${load(loadStart)} at the start, ${load(loadEnd)} at the end).`,
      `A ${N}-path closure (seeded random DAG, ${(total / 1048576).toFixed(1)} MiB of NARs, 4 KiB-2 MiB files plus three 16 MiB ones), compression=none, ${JOBS} transfers at once on both sides; ${RUNS} rounds, each side first in every other round.`,
      'Floor: the same bytes with `@aws-sdk/client-s3` alone (push: PUT each NAR from a file then a narinfo-sized object; pull: GET narinfo then NAR, bytes discarded), through the same `S3Client` configuration strata uses (keep-alive, 32 sockets, `requestChecksumCalculation`/`responseChecksumValidation: WHEN_REQUIRED`, so neither side computes a CRC32 per request). strata push: `copyPaths(local, s3://…)`. strata pull: `copyPaths(s3://…, fresh local store)` (GET, verify, unpack, register).',
      '',
      '| direction | SDK floor (median) | strata (median) | strata / floor (median of rounds) | ratio of medians | client CPU floor / strata | RGW CPU floor / strata |',
      '|---|---|---|---|---|---|---|',
      row('push', 'floorPush', 'strataPush'),
      row('pull', 'floorPull', 'strataPull'),
      row('pull, cache side only (GET + verify, no local store)', 'floorPull', 'strataRead'),
      '',
      `All runs (s): floor push ${all('floorPush')}; strata push ${all('strataPush')}; floor pull ${all('floorPull')}; strata pull ${all('strataPull')}; strata cache side only ${all('strataRead')}.`,
      '',
    ].join('\n');
    process.stdout.write(`${section}\n`);
    if (WRITE) writeSection(section);
  } finally {
    await floorTransport.close();
    if (!envFile) stopS3(s3);
  }
}

/**
 * Replaces the generated part of "## S3" in BENCHMARKS.md; the hand-written reading that follows
 * it (from the line starting "Reading the numbers") is kept. Others edit other sections: the
 * file is re-read right before a small read-modify-write of ours only.
 */
function writeSection(section: string): void {
  const file = join(ROOT, 'BENCHMARKS.md');
  const text = readFileSync(file, 'utf8');
  const start = text.search(/^## S3$/m);
  if (start < 0) {
    writeFileSync(file, `${text.replace(/\n*$/, '\n\n')}${section}`);
  } else {
    const afterTitle = start + '## S3'.length;
    const nextRel = text.slice(afterTitle).search(/^## /m);
    const end = nextRel < 0 ? text.length : afterTitle + nextRel;
    const body = text.slice(start, end);
    const reading = body.search(/^Reading the numbers/m);
    const kept = reading < 0 ? '' : `\n${body.slice(reading).replace(/\n*$/, '\n')}`;
    writeFileSync(file, `${text.slice(0, start)}${section}${kept}${nextRel < 0 ? '' : `\n${text.slice(end)}`}`);
  }
  process.stderr.write('BENCHMARKS.md: section "S3" written\n');
}

await main();
