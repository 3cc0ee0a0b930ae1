/**
 * s3:// binary caches against a real S3 server (Ceph RGW on loopback, started once for this
 * file: ~15 s, the biggest share of the budget): push and pull with the CLI, substitution, a
 * remote lower of a layered store, several processes at once, real Nix 2.8 over plain HTTP, and
 * the failures a user meets (credentials, bucket, throttling, a server killed mid-upload).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import type { StorePath } from '../../src/core/store-path.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { initLayered } from '../../src/store/layered/open-layered.js';
import { openStore } from '../../src/store/open.js';
import { S3Transport } from '../../src/store/binary-cache/s3-transport.js';
import { substitutePaths } from '../../src/store/substitute.js';
import { PUBLIC_KEY, writeKeys } from '../binary-cache/_cache.js';
import { nixAsync } from '../serve/_serve.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { haveNix } from '../support/nix.js';
import { storeContract } from '../support/store-contract.js';
import { tempDir } from '../support/tmp.js';
import { startProxy } from './_proxy.js';
import {
  danglingNarInfos,
  getText,
  killGateway,
  listObjects,
  makeBucket,
  openUploads,
  restartGateway,
  type S3Server,
  s3Unavailable,
  s3Uri,
  startS3,
  stopS3,
} from './_s3.js';

const unavailable = s3Unavailable();
if (unavailable) console.warn(`\n!!! SKIPPING the S3 tests: ${unavailable}\n`);

// 5 MiB parts (S3's minimum) so that the 6 MiB path goes up in 2 parts.
const PARAMS = '&compression=zstd&buffer-size=5242880';

describe.skipIf(unavailable !== undefined)('s3:// binary caches on a real S3 server', () => {
  let s3: S3Server;
  let work: string;
  let sk: string;
  let src: string;
  let top: StorePath;
  let topPrinted: string;
  let closureSize: number;
  let cacheHome = 0;

  /** A CLI run with its own narinfo disk cache (each process stands for its own host). */
  const strata = (args: string[], env: Record<string, string> = {}) =>
    runStrata(['--no-progress', '--trusted-public-keys', PUBLIC_KEY, ...args], { env: { XDG_CACHE_HOME: join(work, `xdg-${++cacheHome}`), ...env } });

  beforeAll(async () => {
    ensureBuilt();
    s3 = startS3();
    work = join(s3.dir, 'work');
    mkdirSync(work);
    sk = writeKeys(work).sk;
    // The source closure: a 6 MiB path (multipart: 2 parts) under a chain of 15 small ones.
    src = join(work, 'src');
    const store = (await openStore(src)) as LocalStore;
    mkdirSync(join(work, 'big'));
    writeFileSync(join(work, 'big', 'blob'), randomBytes(6 << 20));
    let prev = (await store.addPath(join(work, 'big'))).path;
    for (let i = 0; i < 15; i++) prev = (await store.addText(`chain-${i}`, `${store.storeDir.print(prev)}\n${'x'.repeat(1000 * i)}`, [prev])).path;
    top = prev;
    topPrinted = store.storeDir.print(top);
    closureSize = 16;
    await store.close();
  }, 240_000);

  afterAll(() => stopS3(s3), 120_000);

  it('strata copy --to s3:// pushes a closure (multipart for the big NAR, narinfos signed); --from s3:// pulls it into a fresh store', async () => {
    const bucket = await makeBucket(s3, 'push');
    const uri = s3Uri(s3, bucket, `${PARAMS}&secret-key=${sk}`);
    // Through a logging proxy: what the bucket already has is asked with two listings (narinfos,
    // then NAR files), not a narinfo lookup and a HEAD per path.
    const logged = await startProxy(s3.port);
    try {
      const push = await strata(['copy', '--from', src, '--to', s3Uri(s3, bucket, `${PARAMS}&secret-key=${sk}`, logged.hostPort), '-r', topPrinted]);
      expect(push.stderr).toBe(`copied ${closureSize} paths (0 already present)\n`);
      expect(push.code).toBe(0);
      expect(logged.log.filter((e) => e.method === 'GET' && e.url.includes('.narinfo'))).toEqual([]);
      const listings = logged.log.filter((e) => e.method === 'GET' && e.url.includes('list-type=2')).map((e) => /[?&]prefix=([^&]*)/.exec(e.url)?.[1] ?? '');
      expect(listings.sort()).toEqual(['', 'nar%2F']);
      expect(logged.log.filter((e) => e.method === 'HEAD')).toEqual([]);
    } finally {
      await logged.close();
    }
    const objects = await listObjects(s3, bucket);
    expect([...objects.keys()].filter((k) => k.endsWith('.narinfo'))).toHaveLength(closureSize);
    expect([...objects.keys()].filter((k) => k.startsWith('nar/') && k.endsWith('.nar.zst'))).toHaveLength(closureSize);
    expect(Math.max(...objects.values())).toBeGreaterThan(6 << 20);
    expect(objects.get('nix-cache-info')).toBeGreaterThan(0);
    expect(await danglingNarInfos(s3, bucket, objects)).toEqual([]);
    expect(await openUploads(s3, bucket)).toBe(0);
    expect(await getText(s3, bucket, `${top.hashPart}.narinfo`)).toMatch(/^Sig: vectors-test-key-1:/m);

    // Again: every narinfo is there, nothing is sent.
    const again = await strata(['copy', '--from', src, '--to', uri, '-r', topPrinted]);
    expect(again.stderr).toBe(`copied 0 paths (${closureSize} already present)\n`);

    // Pull into a fresh local store; real Nix checks every file.
    const dst = join(work, 'pulled');
    const pull = await strata(['copy', '--from', s3Uri(s3, bucket), '--to', dst, '-r', topPrinted]);
    expect(pull.stderr).toBe(`copied ${closureSize} paths (0 already present)\n`);
    expect(pull.code).toBe(0);
    if (haveNix()) {
      const v = await nixAsync('nix-store', ['--store', dst, '--verify', '--check-contents']);
      expect(v.code, v.stderr).toBe(0);
    }

    // A NAR already there (HEAD) is not uploaded again when only its narinfo is missing.
    await s3.client.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${top.hashPart}.narinfo` }));
    const proxy = await startProxy(s3.port);
    try {
      const r = await strata(['copy', '--from', src, '--to', s3Uri(s3, bucket, `${PARAMS}&secret-key=${sk}`, proxy.hostPort), '-r', topPrinted]);
      expect(r.stderr).toBe(`copied 1 paths (${closureSize - 1} already present)\n`);
      const puts = proxy.log.filter((e) => e.method === 'PUT' || e.method === 'POST').map((e) => e.url.split('?')[0]);
      expect(puts).toEqual([`/${bucket}/${top.hashPart}.narinfo`]);
      expect(proxy.log.some((e) => e.method === 'HEAD' && e.url.includes('/nar/'))).toBe(true);
    } finally {
      await proxy.close();
    }
  });

  it('an s3 cache substitutes into a local store, and is a remote lower of a layered store', async () => {
    const bucket = await makeBucket(s3, 'subst');
    expect((await strata(['copy', '--from', src, '--to', s3Uri(s3, bucket, `${PARAMS}&secret-key=${sk}`), '-r', topPrinted])).code).toBe(0);
    const cache = await openStore(s3Uri(s3, bucket));
    const local = await openStore(join(work, 'subst-local'));
    try {
      const r = await substitutePaths(local, [cache], [top], { trustedPublicKeys: [PUBLIC_KEY] });
      expect(r.missing).toEqual([]);
      expect(r.substituted).toHaveLength(closureSize);
      expect(await local.isValidPath(top)).toBe(true);
    } finally {
      await cache.close();
      await local.close();
    }
    if (process.getuid?.() !== 0) return;
    // Layered: an (empty) local lower for the overlay, the bucket as a remote lower below it.
    const lowerRoot = join(work, 'lower');
    await (await openStore(lowerRoot)).close();
    const layeredDir = tempDir();
    const store = await initLayered(join(layeredDir, 'l'), [lowerRoot, s3Uri(s3, bucket)], { trustedPublicKeys: [PUBLIC_KEY] });
    try {
      expect((await store.queryPathInfo(top))?.layer).toBe('lower1');
      expect(await store.upper.isValidPath(top)).toBe(false);
      // First use fetches the closure into the upper.
      expect(await store.isValidPath(top)).toBe(true);
      expect(await store.upper.isValidPath(top)).toBe(true);
      expect((await store.queryPathInfo(top))?.layer).toBe('upper');
    } finally {
      await store.close();
    }
  });

  it('several processes push overlapping closures and substitute at once; no narinfo ever points at a missing or partial NAR', async () => {
    const bucket = await makeBucket(s3, 'many');
    // Three "hosts" whose closures share a 12-path base (and the 6 MiB path under it).
    const store = (await openStore(src)) as LocalStore;
    let base = top;
    for (let i = 0; i < 12; i++) base = (await store.addText(`base-${i}`, `${store.storeDir.print(base)} ${i}\n`.repeat(50 + i * 40), [base])).path;
    const tops: string[] = [];
    for (let h = 0; h < 3; h++) {
      let p = base;
      for (let i = 0; i < 6; i++) p = (await store.addText(`host${h}-${i}`, `${store.storeDir.print(p)} ${h}.${i}\n`.repeat(100 + i * 50), [p])).path;
      tops.push(store.storeDir.print(p));
    }
    const basePrinted = store.storeDir.print(base);
    await store.close();

    let polling = true;
    const violations: string[] = [];
    let polls = 0;
    const poller = (async () => {
      while (polling) {
        violations.push(...(await danglingNarInfos(s3, bucket)));
        polls++;
      }
    })();
    const uri = s3Uri(s3, bucket, `${PARAMS}&secret-key=${sk}`);
    // Pullers retry until the base closure is complete; ttl-negative=0 so "not yet" is not remembered.
    const pull = async (n: number) => {
      const dst = join(work, `many-pull-${n}`);
      for (let attempt = 0; attempt < 100; attempt++) {
        const r = await strata(['copy', '--from', s3Uri(s3, bucket, '&ttl-negative=0'), '--to', dst, '-r', basePrinted]);
        if (r.code === 0) return { dst, attempts: attempt + 1 };
        expect(r.stderr).toMatch(/^error: Cannot copy '\/nix\/store\/[^']*': it is not valid in 's3:\/\/|^error: Cannot [^\n]*not valid/);
        await new Promise((res) => setTimeout(res, 500));
      }
      throw new Error('pull never succeeded');
    };
    const [pushes, pulls] = await Promise.all([Promise.all(tops.map((t) => strata(['copy', '--from', src, '--to', uri, '-r', t]))), Promise.all([pull(1), pull(2)])]);
    polling = false;
    await poller;
    for (const p of pushes) expect(p.code, p.stderr).toBe(0);
    // Together they added each path once or, when two raced for it, twice with the same bytes.
    const copied = pushes.map((p) => Number(/^copied (\d+) paths/.exec(p.stderr)?.[1]));
    expect(copied.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(closureSize + 12 + 18);
    expect(violations).toEqual([]);
    expect(polls).toBeGreaterThan(0);
    const objects = await listObjects(s3, bucket);
    expect([...objects.keys()].filter((k) => k.endsWith('.narinfo'))).toHaveLength(closureSize + 12 + 18);
    expect(await danglingNarInfos(s3, bucket, objects)).toEqual([]);
    for (const { dst } of pulls) {
      const d = await openStore(dst);
      expect((await d.queryAllValidPaths()).length).toBe(closureSize + 12);
      await d.close();
    }
  });

  it.skipIf(!haveNix())('real Nix 2.8 substitutes over plain HTTP from a public-read bucket that strata pushed', async () => {
    const bucket = await makeBucket(s3, 'public', { public: true });
    expect((await strata(['copy', '--from', src, '--to', s3Uri(s3, bucket, `&compression=zstd&secret-key=${sk}`), '-r', topPrinted])).code).toBe(0);
    const url = `${s3.endpoint}/${bucket}`;
    const dst = join(work, 'nix-dst');
    const r = await nixAsync('nix-store', ['--store', dst, '-r', topPrinted, '--option', 'substituters', url, '--option', 'trusted-public-keys', PUBLIC_KEY]);
    expect(r.stderr).toContain(`copying path '${topPrinted}' from '${url}'`);
    expect(r.code).toBe(0);
    const v = await nixAsync('nix-store', ['--store', dst, '--verify', '--check-contents']);
    expect(v.code, v.stderr).toBe(0);
  });

  it('wrong credentials and a missing bucket: one-line errors, nothing written', async () => {
    const bucket = await makeBucket(s3, 'creds');
    const uri = s3Uri(s3, bucket, PARAMS);
    const badSecret = await strata(['copy', '--from', src, '--to', uri, '-r', topPrinted], { AWS_SECRET_ACCESS_KEY: 'wrong-secret' });
    expect(badSecret.code).toBe(1);
    expect(badSecret.stderr).toMatch(new RegExp(`^error: Cannot fetch 'http://${s3.hostPort}/${bucket}/nix-cache-info': the server refused the credentials \\(SignatureDoesNotMatch\\)\\nhint: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY[^\\n]*\\n$`));
    const badKey = await strata(['copy', '--from', src, '--to', uri, '-r', topPrinted], { AWS_ACCESS_KEY_ID: 'NOSUCHKEY0000000000' });
    expect(badKey.code).toBe(1);
    expect(badKey.stderr).toMatch(/^error: Cannot fetch '[^']*': the server refused the credentials \(InvalidAccessKeyId\)\nhint: /);
    expect((await listObjects(s3, bucket)).size).toBe(0);

    const missing = await strata(['copy', '--from', s3Uri(s3, 'no-such-bucket-here'), '--to', join(work, 'x'), '-r', topPrinted]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^error: Cannot fetch '[^']*\/no-such-bucket-here\/nix-cache-info': bucket 'no-such-bucket-here' does not exist\nhint: create the bucket first[^\n]*\n$/);
  });

  it('a clock an hour off: the SDK learns the offset from the refusal and the request is retried, a HEAD too', async () => {
    const bucket = await makeBucket(s3, 'skew');
    const open = () => new S3Transport({ bucket, endpoint: s3.endpoint, backoffMs: 10, credentials: { accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey } });
    const setup = open();
    await setup.putFile('nix-cache-info', Buffer.from('StoreDir: /nix/store\n'), 'text/x-nix-cache-info');
    await setup.close();
    // This machine's clock an hour behind the server's (only Date: timers run as usual).
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() - 3600_000);
    try {
      // The first request of a process may be a HEAD (narinfos answered by the disk cache): its
      // 403 has no body to name RequestTimeTooSkewed, only the Date header the SDK corrects from.
      for (const op of [(t: S3Transport) => t.exists('nix-cache-info'), async (t: S3Transport) => (await t.getFile('nix-cache-info')) !== undefined]) {
        const transport = open();
        try {
          expect(await op(transport)).toBe(true);
        } finally {
          await transport.close();
        }
      }
    } finally {
      vi.useRealTimers();
    }
  });

  it('throttling (503 SlowDown) is retried with backoff; when it never ends, a clear error and no narinfo without its NAR', async () => {
    const bucket = await makeBucket(s3, 'throttle');
    // The first three uploads of NAR data are refused; the fourth attempt of each goes through.
    let refused = 0;
    const proxy = await startProxy(s3.port, (req) => (req.method === 'PUT' && req.url!.includes('/nar/') && refused++ < 3 ? 'slowdown' : 'pass'));
    try {
      const r = await strata(['copy', '--from', src, '--to', s3Uri(s3, bucket, `${PARAMS}&secret-key=${sk}`, proxy.hostPort), '-r', topPrinted]);
      expect(r.stderr).toBe(`copied ${closureSize} paths (0 already present)\n`);
      expect(proxy.log.filter((e) => e.status === 503)).toHaveLength(3);
      expect(await danglingNarInfos(s3, bucket)).toEqual([]);
    } finally {
      await proxy.close();
    }

    const bucket2 = await makeBucket(s3, 'throttle2');
    const always = await startProxy(s3.port, (req) => (req.method === 'PUT' && req.url!.includes('/nar/') ? 'slowdown' : 'pass'));
    try {
      const r = await strata(['copy', '-j', '2', '--from', src, '--to', s3Uri(s3, bucket2, PARAMS, always.hostPort), '-r', topPrinted]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error: Cannot (upload|upload a part of) '[^']*\/nar\/[a-z0-9]+\.nar\.zst': SlowDown \(HTTP 503\) \(after 5 attempts\)\n$/);
      const objects = await listObjects(s3, bucket2);
      expect([...objects.keys()].filter((k) => k !== 'nix-cache-info')).toEqual([]);
      expect(await openUploads(s3, bucket2)).toBe(0);
    } finally {
      await always.close();
    }
  });

  it('a server killed mid-upload: a clear error, no partial object visible; a second push completes the cache', async () => {
    const bucket = await makeBucket(s3, 'killed');
    let killed = false;
    // Kill the gateway the moment the first part of the big NAR starts to flow.
    const proxy = await startProxy(s3.port, (req) => {
      if (!killed && req.method === 'PUT' && /[?&]partNumber=/.test(req.url!)) {
        killed = true;
        setTimeout(() => killGateway(s3), 30);
      }
      return 'pass';
    });
    const uri = s3Uri(s3, bucket, `${PARAMS}&secret-key=${sk}`, proxy.hostPort);
    try {
      const r = await strata(['copy', '--from', src, '--to', uri, '-r', topPrinted]);
      expect(killed).toBe(true);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error: Cannot [a-z ]+ '[^']*': connection to 'http:\/\/127\.0\.0\.1:\d+' failed \(E[A-Z]+\) \(after 5 attempts\)\n$/);
    } finally {
      await restartGateway(s3);
    }
    try {
      // Nothing half-written is visible: no narinfo, no NAR object for the big path.
      const objects = await listObjects(s3, bucket);
      expect([...objects.keys()].filter((k) => k.endsWith('.narinfo'))).toEqual([]);
      expect([...objects.values()].every((size) => size < 6 << 20)).toBe(true);
      const again = await strata(['copy', '--from', src, '--to', uri, '-r', topPrinted]);
      expect(again.stderr).toBe(`copied ${closureSize} paths (0 already present)\n`);
      expect(await danglingNarInfos(s3, bucket)).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  describe('the Store contract (test/support/store-contract.ts)', () => {
    storeContract(async () => {
      const bucket = await makeBucket(s3, 'contract');
      process.env['XDG_CACHE_HOME'] = join(work, `xdg-contract-${bucket}`);
      const store = await openStore(s3Uri(s3, bucket, PARAMS));
      return { store, close: () => store.close() };
    });
  });
});
