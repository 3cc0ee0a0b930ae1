/**
 * `strata serve` vs nginx serving the same closure as a static cache (compression none):
 * narinfo latency over one keep-alive connection, NAR throughput on one connection, and peak
 * memory of strata serve while it streams a 4 GiB path.
 *
 * Run: `npx tsx bench/serve.ts [GiB] [--rounds N] [--latency-only]` (GiB of the memory test,
 * default 4, 0 skips it; --latency-only skips the NAR download and the memory test).
 *
 * Latency is measured against five servers, each its own process, in interleaved rounds (the
 * order rotated every round; this 2-core VM is shared, so back-to-back blocks would compare
 * different machines): nginx, strata serve, and three floors that say what is left to strata at
 * all: a bare node:http server, the same plus the one pread strata's hot path needs, and a bare
 * `net` server, each answering every request with the same fixed narinfo response. Two clients: undici (one keep-alive connection) and a minimal raw
 * socket client (less client time in each round trip, so server differences show more).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

import { Client } from 'undici';

import { parseNarInfo } from '../src/core/narinfo.js';
import type { LocalStore } from '../src/store/local/local-store.js';
import { openStore } from '../src/store/open.js';
import { addChain, startNginx, startStrata, writeStaticCache } from './_fixture.js';

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i < 0 ? undefined : args.splice(i, 2)[1];
};
const latencyOnly = args.includes('--latency-only');
if (latencyOnly) args.splice(args.indexOf('--latency-only'), 1);
// 16 rounds × 500 requests per server and client: 8,000 timed GETs each, ~1 minute in all.
const ROUNDS = Number(flag('--rounds') ?? 16);
const PER_ROUND = 500;
const WARM = 50;
const bigGiB = latencyOnly ? 0 : Number(args[0] ?? 4);

const work = mkdtempSync(join(tmpdir(), 'strata-bench-serve-'));
const storeRoot = join(work, 'store');
const cacheDir = join(work, 'static');
const load = (): string => loadavg().map((x) => x.toFixed(2)).join(' ');

/** Sends GETs over one connection and times each round trip (µs). */
interface LatencyClient {
  get(path: string): Promise<number>;
  close(): Promise<void>;
}

function undiciClient(base: string): LatencyClient {
  const client = new Client(base, { pipelining: 1 });
  return {
    async get(path) {
      const t = process.hrtime.bigint();
      const r = await client.request({ path, method: 'GET' });
      await r.body.text();
      if (r.statusCode !== 200) throw new Error(`${base}${path}: ${r.statusCode}`);
      return Number(process.hrtime.bigint() - t) / 1e3;
    },
    close: () => client.close(),
  };
}

/** A minimal keep-alive client: one request in flight, the response complete at Content-Length. */
async function rawClient(port: number): Promise<LatencyClient> {
  const sock: Socket = connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  let buf: Buffer = Buffer.alloc(0);
  let done: (() => void) | undefined;
  sock.on('data', (c: Buffer) => {
    buf = buf.length === 0 ? c : Buffer.concat([buf, c]);
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = buf.subarray(0, end).toString('latin1');
    const m = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!m || !head.startsWith('HTTP/1.1 200')) throw new Error(`unexpected response: ${head.slice(0, 200)}`);
    if (buf.length >= end + 4 + Number(m[1])) {
      buf = Buffer.alloc(0);
      done!();
    }
  });
  return {
    get(path) {
      const t = process.hrtime.bigint();
      return new Promise<number>((resolve) => {
        done = () => resolve(Number(process.hrtime.bigint() - t) / 1e3);
        sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      });
    },
    close: async () => void sock.destroy(),
  };
}

/**
 * A floor server as its own process, answering every request with one fixed response. `pread`:
 * node:http plus what strata's hot path must do at least, one 96-byte pread of the store
 * database's -shm file per request (the change token that proves the path still valid).
 */
function startBare(kind: 'http' | 'pread' | 'net', port: number, body: Buffer, shm = ''): Promise<ChildProcess> {
  const code =
    kind !== 'net'
      ? `const body = Buffer.from(process.env.BODY, 'base64');
         const fs = require('node:fs');
         const fd = ${kind === 'pread' ? `fs.openSync(${JSON.stringify(shm)}, 'r')` : '-1'};
         const token = Buffer.alloc(96);
         require('node:http').createServer((req, res) => {
           if (fd >= 0 && fs.readSync(fd, token, 0, 96, 0) !== 96) throw new Error('short read');
           res.writeHead(200, { 'content-type': 'text/x-nix-narinfo', 'content-length': body.length });
           res.end(body);
         }).listen(${port}, '127.0.0.1', () => console.log('up'));`
      : `const body = Buffer.from(process.env.BODY, 'base64');
         const res = Buffer.concat([Buffer.from('HTTP/1.1 200 OK\\r\\ncontent-type: text/x-nix-narinfo\\r\\ncontent-length: ' + body.length + '\\r\\n\\r\\n'), body]);
         require('node:net').createServer((s) => {
           s.setNoDelay(true);
           let tail = '';
           s.on('data', (c) => {
             const t = tail + c.toString('latin1');
             let n = 0, i = -1;
             while ((i = t.indexOf('\\r\\n\\r\\n', i + 1)) >= 0) n++;
             tail = t.slice(Math.max(0, t.lastIndexOf('\\r\\n\\r\\n') + 4, t.length - 3));
             for (let k = 0; k < n; k++) s.write(res);
           });
         }).listen(${port}, '127.0.0.1', () => console.log('up'));`;
  const child = spawn(process.execPath, ['-e', code], { env: { ...process.env, BODY: body.toString('base64') }, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout!.once('data', () => resolve(child));
    child.once('exit', (c) => reject(new Error(`bare ${kind} server exited ${c}`)));
  });
}

/**
 * Nanoseconds a process has run on a CPU (all its threads; /proc/PID/task/TID/schedstat). Server
 * CPU per request is far steadier than wall latency on a loaded machine: waiting for a core
 * does not count.
 */
function cpuNs(pid: number): number {
  let ns = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
  return ns;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * p)]!;

async function download(base: string, path: string): Promise<{ seconds: number; bytes: number }> {
  const client = new Client(base);
  try {
    const t = performance.now();
    const r = await client.request({ path, method: 'GET' });
    let bytes = 0;
    for await (const c of r.body) bytes += (c as Buffer).length;
    return { seconds: (performance.now() - t) / 1000, bytes };
  } finally {
    await client.close();
  }
}

const store = (await openStore(storeRoot)) as LocalStore;
const chain = await addChain(store, 300);
// A 256 MiB file of random-ish data (incompressible) for throughput.
let blob: (typeof chain)[number] | undefined;
if (!latencyOnly) {
  const blobFile = join(work, 'blob');
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
  writeFileSync(blobFile, Buffer.concat(Array.from({ length: 256 }, (_, i) => (chunk.fill(i & 0xff, 0, 8), Buffer.from(chunk)))));
  blob = (await store.addPath(blobFile, { name: 'blob-256m' })).path;
  rmSync(blobFile);
}
await writeStaticCache(store, blob ? [chain.at(-1)!, blob] : [chain.at(-1)!], cacheDir);
await store.close();

const stopNginx = await startNginx(work, cacheDir, 18481);
const strata = await startStrata(storeRoot, 18482, ['--compression', 'none']);
const nginxUrl = 'http://127.0.0.1:18481';
const fixed = Buffer.from(await (await fetch(`${strata.url}/${chain[150]!.hashPart}.narinfo`)).arrayBuffer());
const bareHttp = await startBare('http', 18484, fixed);
const bareNet = await startBare('net', 18485, fixed);
const barePread = await startBare('pread', 18486, fixed, join(storeRoot, 'nix/var/nix/db/db.sqlite-shm'));
// nginx answers from its one worker process, the master's child.
const nginxMaster = Number(readFileSync(join(work, 'nginx', 'nginx.pid'), 'utf8'));
const nginxWorker = Number(readFileSync(`/proc/${nginxMaster}/task/${nginxMaster}/children`, 'utf8').trim().split(' ')[0]);
const servers = [
  { name: 'nginx', port: 18481, pid: nginxWorker },
  { name: 'strata serve', port: 18482, pid: strata.child.pid! },
  { name: 'bare node:http', port: 18484, pid: bareHttp.pid! },
  { name: 'bare node:http + pread', port: 18486, pid: barePread.pid! },
  { name: 'bare net', port: 18485, pid: bareNet.pid! },
];
try {
  const loadBefore = load();
  const hashes = chain.map((p) => p.hashPart);
  const times = new Map<string, number[]>();
  const roundMedians = new Map<string, number[]>();
  const cpu = new Map<string, { ns: number; n: number }>();
  for (let r = 0; r < ROUNDS; r++) {
    for (const clientKind of ['undici', 'raw'] as const) {
      for (let k = 0; k < servers.length; k++) {
        const s = servers[(k + r) % servers.length]!;
        const key = `${clientKind}\t${s.name}`;
        const c = clientKind === 'undici' ? undiciClient(`http://127.0.0.1:${s.port}`) : await rawClient(s.port);
        const got: number[] = [];
        const cpu0 = cpuNs(s.pid);
        try {
          for (let i = 0; i < WARM + PER_ROUND; i++) {
            const us = await c.get(`/${hashes[(i * 7 + r) % hashes.length]}.narinfo`);
            if (i >= WARM) got.push(us);
          }
        } finally {
          await c.close();
        }
        const used = cpu.get(s.name) ?? cpu.set(s.name, { ns: 0, n: 0 }).get(s.name)!;
        used.ns += cpuNs(s.pid) - cpu0;
        used.n += WARM + PER_ROUND;
        (times.get(key) ?? times.set(key, []).get(key)!).push(...got);
        (roundMedians.get(key) ?? roundMedians.set(key, []).get(key)!).push(median(got));
      }
    }
  }
  const loadAfter = load();
  console.log(`narinfo latency: ${ROUNDS} interleaved rounds × ${PER_ROUND} GETs per server and client (after ${WARM} warm-up GETs), one keep-alive connection`);
  console.log(`load average before: ${loadBefore}; after: ${loadAfter}`);
  const cpuPer = (name: string): number => cpu.get(name)!.ns / cpu.get(name)!.n / 1e3;
  console.log('\nserver CPU time per request (user + system, all threads, both clients; /proc/PID/task/*/schedstat):');
  for (const s of servers) console.log(`  ${s.name}: ${cpuPer(s.name).toFixed(1)} µs (${(cpuPer(s.name) / cpuPer('nginx')).toFixed(2)}× nginx)`);
  for (const clientKind of ['undici', 'raw']) {
    const ref = median(times.get(`${clientKind}\tnginx`)!);
    const refRounds = median(roundMedians.get(`${clientKind}\tnginx`)!);
    console.log(`\nclient: ${clientKind}`);
    console.log('| server | median | median of round medians | p90 | mean | median / nginx | round medians / nginx |');
    console.log('|---|---|---|---|---|---|---|');
    for (const s of servers) {
      const t = times.get(`${clientKind}\t${s.name}`)!;
      const m = median(t);
      const rm = median(roundMedians.get(`${clientKind}\t${s.name}`)!);
      const mean = t.reduce((a, b) => a + b, 0) / t.length;
      console.log(`| ${s.name} | ${m.toFixed(1)} µs | ${rm.toFixed(1)} µs | ${pct(t, 0.9).toFixed(1)} µs | ${mean.toFixed(1)} µs | ${(m / ref).toFixed(2)}× | ${(rm / refRounds).toFixed(2)}× |`);
    }
  }
  const ratioOf = (clientKind: string, name: string): number => median(times.get(`${clientKind}\t${name}`)!) / median(times.get(`${clientKind}\tnginx`)!);
  console.log('\nsummary, median latency / nginx (undici client, raw client); target for strata serve 1.1×:');
  for (const s of servers.slice(1)) {
    const u = ratioOf('undici', s.name);
    const r = ratioOf('raw', s.name);
    console.log(`  ${s.name}: ${u.toFixed(2)}×, ${r.toFixed(2)}×${s.name === 'strata serve' ? (Math.max(u, r) <= 1.1 ? ' (met)' : ' (not met)') : ''}`);
  }

  if (blob) {
    const nginxNi = parseNarInfo(readFileSync(join(cacheDir, `${blob.hashPart}.narinfo`)));
    const strataNi = parseNarInfo(await (await fetch(`${strata.url}/${blob.hashPart}.narinfo`)).text());
    const nd: number[] = [];
    const sd: number[] = [];
    for (let i = 0; i < 3; i++) {
      nd.push((await download(nginxUrl, `/${nginxNi.url}`)).seconds);
      sd.push((await download(strata.url, `/${strataNi.url}`)).seconds);
    }
    const size = nginxNi.fileSize!;
    const n = Math.min(...nd);
    const s = Math.min(...sd);
    console.log(`\nNAR ${(size / 2 ** 20).toFixed(0)} MiB, one connection, best of 3: nginx ${n.toFixed(2)} s (${(size / 1e6 / n).toFixed(0)} MB/s), strata ${s.toFixed(2)} s (${(size / 1e6 / s).toFixed(0)} MB/s), strata / nginx time ${(s / n).toFixed(2)}×; runs (s): nginx ${nd.map((x) => x.toFixed(2)).join(', ')}; strata ${sd.map((x) => x.toFixed(2)).join(', ')}; load ${load()}`);
  }
} finally {
  strata.stop();
  stopNginx();
  bareHttp.kill('SIGTERM');
  bareNet.kill('SIGTERM');
  barePread.kill('SIGTERM');
}

// Peak memory: a sparse file of `bigGiB` GiB added to a fresh store, streamed by strata serve.
if (bigGiB > 0) {
  const bigStoreRoot = join(work, 'bigstore');
  const big = (await openStore(bigStoreRoot)) as LocalStore;
  const f = join(work, 'big');
  writeFileSync(f, '');
  truncateSync(f, bigGiB * 1024 ** 3);
  const p = (await big.addPath(f, { name: 'big' })).path;
  rmSync(f);
  const info = (await big.queryPathInfo(p))!;
  await big.close();
  for (const compression of ['none', 'zstd']) {
    const s = await startStrata(bigStoreRoot, 18483, ['--compression', compression]);
    try {
      const url = `/nar/${p.hashPart}-${info.narHash.toNix32()}.nar${compression === 'zstd' ? '.zst' : ''}`;
      const d = await download(s.url, url);
      const status = readFileSync(`/proc/${s.child.pid}/status`, 'utf8');
      const hwm = /VmHWM:\s+(\d+) kB/.exec(status)![1];
      console.log(`serve ${bigGiB} GiB NAR, compression ${compression}: ${d.seconds.toFixed(1)} s, ${d.bytes} bytes sent, peak RSS of strata serve ${(Number(hwm) / 1024).toFixed(0)} MiB`);
    } finally {
      s.stop();
    }
  }
}
rmSync(work, { recursive: true, force: true });
