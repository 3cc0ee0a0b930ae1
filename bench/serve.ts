/**
 * `strata serve` vs nginx serving the same closure as a static cache (compression none):
 * narinfo latency over one keep-alive connection, NAR throughput on one connection, and peak
 * memory of strata serve while it streams a 4 GiB path. Run: `npx tsx bench/serve.ts [GiB]`.
 */
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Client } from 'undici';

import { parseNarInfo } from '../src/core/narinfo.js';
import type { LocalStore } from '../src/store/local/local-store.js';
import { openStore } from '../src/store/open.js';
import { addChain, startNginx, startStrata, writeStaticCache } from './_fixture.js';

const bigGiB = Number(process.argv[2] ?? 4);
const work = mkdtempSync(join(tmpdir(), 'strata-bench-serve-'));
const storeRoot = join(work, 'store');
const cacheDir = join(work, 'static');

async function narinfoLatency(base: string, hashes: string[], rounds: number): Promise<{ median: number; p99: number; mean: number }> {
  const client = new Client(base, { pipelining: 1, connections: 1 } as never);
  const times: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const t = process.hrtime.bigint();
      const r = await client.request({ path: `/${hashes[i % hashes.length]}.narinfo`, method: 'GET' });
      await r.body.text();
      if (r.statusCode !== 200) throw new Error(`narinfo ${r.statusCode}`);
      times.push(Number(process.hrtime.bigint() - t) / 1e3);
    }
  } finally {
    await client.close();
  }
  const warm = times.slice(200).sort((a, b) => a - b);
  return { median: warm[Math.floor(warm.length / 2)]!, p99: warm[Math.floor(warm.length * 0.99)]!, mean: warm.reduce((a, b) => a + b, 0) / warm.length };
}

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
const blobFile = join(work, 'blob');
const chunk = Buffer.alloc(1 << 20);
for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
writeFileSync(blobFile, Buffer.concat(Array.from({ length: 256 }, (_, i) => (chunk.fill(i & 0xff, 0, 8), Buffer.from(chunk)))));
const blob = (await store.addPath(blobFile, { name: 'blob-256m' })).path;
rmSync(blobFile);
await writeStaticCache(store, [chain.at(-1)!, blob], cacheDir);
await store.close();

const stopNginx = await startNginx(work, cacheDir, 18481);
const strata = await startStrata(storeRoot, 18482, ['--compression', 'none']);
const nginxUrl = 'http://127.0.0.1:18481';
try {
  const hashes = chain.map((p) => p.hashPart);
  const results: Record<string, unknown> = {};
  for (const round of [1, 2]) {
    const n = await narinfoLatency(nginxUrl, hashes, 3000);
    const s = await narinfoLatency(strata.url, hashes, 3000);
    results[`narinfo round ${round}`] = { nginx: n, strata: s, ratioMedian: s.median / n.median, ratioMean: s.mean / n.mean };
  }
  const nginxNi = parseNarInfo(readFileSync(join(cacheDir, `${blob.hashPart}.narinfo`)));
  const strataNi = parseNarInfo(await (await fetch(`${strata.url}/${blob.hashPart}.narinfo`)).text());
  const nd: number[] = [];
  const sd: number[] = [];
  for (let i = 0; i < 3; i++) {
    nd.push((await download(nginxUrl, `/${nginxNi.url}`)).seconds);
    sd.push((await download(strata.url, `/${strataNi.url}`)).seconds);
  }
  const size = nginxNi.fileSize!;
  results['NAR 256 MiB, one connection'] = { nginxBestS: Math.min(...nd), strataBestS: Math.min(...sd), nginxMBps: size / 1e6 / Math.min(...nd), strataMBps: size / 1e6 / Math.min(...sd), ratio: Math.min(...sd) / Math.min(...nd) };
  console.log(JSON.stringify(results, null, 2));
} finally {
  strata.stop();
  stopNginx();
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
      console.log(JSON.stringify({ [`serve ${bigGiB} GiB NAR, compression ${compression}`]: { seconds: d.seconds, bytesSent: d.bytes, peakRssMiB: Number(hwm) / 1024 } }));
    } finally {
      s.stop();
    }
  }
}
rmSync(work, { recursive: true, force: true });
