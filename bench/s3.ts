/**
 * bench/s3.ts — pushing and pulling a 300-path closure through strata's s3:// cache vs the raw
 * S3 throughput of the same bytes with the SDK alone (the floor), on a real S3 server (Ceph RGW
 * on loopback, started by ../shared/tools/s3-local.sh unless S3_BENCH_ENV names the `env` file
 * of a running one). Target: strata ≥ 70 % of the floor both ways.
 *
 *   npx tsx bench/s3.ts [--runs 3] [--write]
 *
 * The closure is a seeded random DAG (each path refers to up to 3 earlier ones, the top to all
 * the rest) of incompressible files, 4 KiB-2 MiB log-uniform plus three 16 MiB ones, pushed with
 * compression=none so both sides move identical bytes. Floor push: PUT each NAR from a file then
 * its narinfo, 8 at once (strata's default -j). Floor pull: GET each narinfo then its NAR, 8 at
 * once, bytes discarded. strata push: copyPaths local → s3 (dump, hash, stage, PUT, narinfo).
 * strata pull: copyPaths s3 → a fresh local store (verify, unpack, register).
 */
import { createReadStream, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';

import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';

import type { StorePath } from '../src/core/store-path.js';
import { copyPaths } from '../src/store/copy.js';
import type { LocalStore } from '../src/store/local/local-store.js';
import { openStore } from '../src/store/open.js';
import { makeBucket, type S3Server, s3Uri, startS3, stopS3 } from '../test/s3/_s3.js';

const ROOT = join(import.meta.dirname, '..');
const args = process.argv.slice(2);
const RUNS = Number(args[args.indexOf('--runs') + 1] ?? 3) || 3;
const WRITE = args.includes('--write');
const JOBS = 8;
const N = 300;

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

async function buildClosure(work: string): Promise<{ store: LocalStore; top: StorePath; paths: StorePath[] }> {
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
  return { store, top, paths };
}

/** Runs `fn` over `items`, `limit` at a time. */
async function pool<T>(items: T[], limit: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => { while (next < items.length) await fn(items[next++]!); }));
}

const sink = () => new Writable({ write: (_c, _e, cb) => cb() });

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const work = join(ROOT, '.cache', 'bench', 's3');
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  let s3: S3Server | undefined;
  const envFile = process.env['S3_BENCH_ENV'];
  if (envFile) {
    const env = Object.fromEntries(readFileSync(envFile, 'utf8').trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    const { S3Client } = await import('@aws-sdk/client-s3');
    process.env['AWS_ACCESS_KEY_ID'] = env['ACCESS_KEY'];
    process.env['AWS_SECRET_ACCESS_KEY'] = env['SECRET_KEY'];
    process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';
    const url = new URL(env['ENDPOINT']!);
    const client = new S3Client({ endpoint: env['ENDPOINT'], region: env['REGION'], forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
    s3 = { dir: '', endpoint: env['ENDPOINT']!, hostPort: url.host, port: Number(url.port), accessKey: env['ACCESS_KEY']!, secretKey: env['SECRET_KEY']!, region: env['REGION']!, client };
  } else {
    process.stderr.write('starting Ceph RGW (s3-local.sh)…\n');
    s3 = startS3();
  }
  const server = s3;
  try {
    process.stderr.write(`building the ${N}-path closure…\n`);
    const { store, top, paths } = await buildClosure(work);
    // The floor's objects: each path's NAR in a file, and a narinfo-sized text.
    const narDir = join(work, 'nars');
    mkdirSync(narDir);
    const objects: { nar: string; size: number; key: string; info: Buffer }[] = [];
    for (const p of paths) {
      const file = join(narDir, p.hashPart);
      await pipeline(await store.narFromPath(p), (await import('node:fs')).createWriteStream(file));
      const info = (await store.queryPathInfo(p))!;
      objects.push({ nar: file, size: info.narSize, key: p.hashPart, info: Buffer.alloc(600 + 60 * info.references.length, 'x') });
    }
    const total = objects.reduce((s, o) => s + o.size, 0);
    process.stderr.write(`closure: ${paths.length} paths, ${(total / 1048576).toFixed(1)} MiB of NARs\n`);

    const results = { floorPush: [] as number[], floorPull: [] as number[], strataPush: [] as number[], strataPull: [] as number[] };
    for (let run = 0; run < RUNS; run++) {
      // Floor push.
      const fb = await makeBucket(server, 'bench-floor');
      let t = performance.now();
      await pool(objects, JOBS, async (o) => {
        await server.client.send(new PutObjectCommand({ Bucket: fb, Key: `nar/${o.key}.nar`, Body: createReadStream(o.nar, { highWaterMark: 1 << 20 }), ContentLength: o.size }));
        await server.client.send(new PutObjectCommand({ Bucket: fb, Key: `${o.key}.narinfo`, Body: o.info }));
      });
      results.floorPush.push((performance.now() - t) / 1000);
      // Floor pull.
      t = performance.now();
      await pool(objects, JOBS, async (o) => {
        const ni = await server.client.send(new GetObjectCommand({ Bucket: fb, Key: `${o.key}.narinfo` }));
        await ni.Body!.transformToByteArray();
        const nar = await server.client.send(new GetObjectCommand({ Bucket: fb, Key: `nar/${o.key}.nar` }));
        await pipeline(nar.Body as NodeJS.ReadableStream, sink());
      });
      results.floorPull.push((performance.now() - t) / 1000);
      // strata push.
      const sb = await makeBucket(server, 'bench-strata');
      const uri = s3Uri(server, sb, '&compression=none');
      const cache = await openStore(uri);
      t = performance.now();
      const pushed = await copyPaths(store, cache, [top], { recursive: true, concurrency: JOBS });
      results.strataPush.push((performance.now() - t) / 1000);
      await cache.close();
      if (pushed.copied.length !== N) throw new Error(`pushed ${pushed.copied.length} paths, not ${N}`);
      // strata pull into a fresh store (its own disk cache state: nothing remembered).
      process.env['XDG_CACHE_HOME'] = join(work, `xdg-${run}`);
      const from = await openStore(uri);
      const dst = await openStore(join(work, `dst-${run}`));
      t = performance.now();
      const pulled = await copyPaths(from, dst, [top], { recursive: true, concurrency: JOBS, requireSigs: false });
      results.strataPull.push((performance.now() - t) / 1000);
      await from.close();
      await dst.close();
      rmSync(join(work, `dst-${run}`), { recursive: true, force: true });
      if (pulled.copied.length !== N) throw new Error(`pulled ${pulled.copied.length} paths, not ${N}`);
      process.stderr.write(`run ${run + 1}: floor push ${results.floorPush.at(-1)!.toFixed(2)} s, strata push ${results.strataPush.at(-1)!.toFixed(2)} s, floor pull ${results.floorPull.at(-1)!.toFixed(2)} s, strata pull ${results.strataPull.at(-1)!.toFixed(2)} s\n`);
    }
    await store.close();

    const mibs = (s: number) => (total / 1048576 / s).toFixed(1);
    const row = (what: string, floor: number[], strata: number[]) => {
      const f = median(floor);
      const s = median(strata);
      return `| ${what} | ${f.toFixed(2)} s (${mibs(f)} MiB/s) | ${s.toFixed(2)} s (${mibs(s)} MiB/s) | ${((f / s) * 100).toFixed(0)} % |`;
    };
    const all = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(', ');
    const section = [
      '## S3',
      '',
      `Command: \`npm run build && npx tsx bench/s3.ts --runs ${RUNS} --write\` (2 × AMD EPYC, Node ${process.version}; Ceph ${'16.2'} RGW from Debian on loopback, memstore, started by \`../shared/tools/s3-local.sh\`).`,
      `A ${N}-path closure (seeded random DAG, ${(total / 1048576).toFixed(1)} MiB of NARs, 4 KiB-2 MiB files plus three 16 MiB ones), compression=none, ${JOBS} transfers at once on both sides; median of ${RUNS}.`,
      'Floor: the same bytes with `@aws-sdk/client-s3` alone (push: PUT each NAR from a file then a narinfo-sized object; pull: GET narinfo then NAR, bytes discarded). strata push: `copyPaths(local, s3://…)` (dump, hash, stage, HEAD, PUT, narinfo). strata pull: `copyPaths(s3://…, fresh local store)` (GET, verify, unpack, register).',
      '',
      '| direction | SDK floor | strata | strata / floor |',
      '|---|---|---|---|',
      row('push', results.floorPush, results.strataPush),
      row('pull', results.floorPull, results.strataPull),
      '',
      `All runs (s): floor push ${all(results.floorPush)}; strata push ${all(results.strataPush)}; floor pull ${all(results.floorPull)}; strata pull ${all(results.strataPull)}.`,
      '',
    ].join('\n');
    process.stdout.write(`${section}\n`);
    if (WRITE) {
      // Others edit other sections: re-read right before a small read-modify-write of ours only.
      const file = join(ROOT, 'BENCHMARKS.md');
      const text = readFileSync(file, 'utf8');
      const start = text.search(/^## S3$/m);
      let next: string;
      if (start < 0) next = `${text.replace(/\n*$/, '\n\n')}${section}`;
      else {
        const after = text.slice(start + 5).search(/^## /m);
        next = `${text.slice(0, start)}${section}${after < 0 ? '' : `\n${text.slice(start + 5 + after)}`}`;
      }
      writeFileSync(file, next);
      process.stderr.write('BENCHMARKS.md: section "S3" written\n');
    }
  } finally {
    if (!envFile) stopS3(s3);
  }
}

await main();
