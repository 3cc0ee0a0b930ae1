import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { isStrataError } from '../../src/core/error.js';
import { parseSecretKey } from '../../src/core/signature.js';
import { StoreDir } from '../../src/core/store-path.js';
import { HttpTransport } from '../../src/store/binary-cache/http-transport.js';
import { CacheServer } from '../../src/serve/cache-server.js';
import { listen } from '../../src/serve/listen.js';
import { copyPaths } from '../../src/store/copy.js';
import { openStore } from '../../src/store/open.js';
import { substitutePaths } from '../../src/store/substitute.js';
import { ensureBuilt, runStrata } from '../support/cli.js';
import { haveNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { filledStore, nixAsync } from '../serve/_serve.js';
import { DEPENDENT, PUBLIC_KEY, SECRET_KEY, withCopyStores, writeVectorCache } from './_cache.js';

const dir = new StoreDir();
const DEP = dir.parse(DEPENDENT);
const SIMPLE = '/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple';

describe('http:// caches (strata client against strata serve, loopback)', () => {
  it('substitutes a closure in one closure request plus one nars.zst/ request (no request per NAR), signatures checked', async () => {
    const work = tempDir();
    const src = await filledStore(work);
    const server = new CacheServer(src, { signKey: parseSecretKey(SECRET_KEY), compression: 'zstd' });
    const l = await listen(server, { host: '127.0.0.1', port: 0 });
    try {
      await withCopyStores(work, l.url, async (cache, local) => {
        const r = await substitutePaths(local, [cache], [DEP], { trustedPublicKeys: [PUBLIC_KEY] });
        expect(r.missing).toEqual([]);
        expect(r.substituted.map((p) => p.name)).toEqual(['simple', 'dependent']);
        const m = server.metrics.render();
        expect(m).toContain('strata_serve_requests_total{route="closure",status="200"} 1');
        expect(m).not.toContain('route="narinfo"');
        // The server offers zstd NARs: the client asks for both in one zstd-compressed answer.
        expect(m).toContain('strata_serve_requests_total{route="nars",status="200"} 1');
        expect(m).not.toContain('route="nar"');
      });
    } finally {
      await l.close();
      await src.close();
    }
  });

  it('uploads with strata copy --to http:// into a writable server', async () => {
    const work = tempDir();
    process.env['XDG_CACHE_HOME'] = join(work, 'xdg');
    const src = await filledStore(work);
    const target = await openStore(join(work, 'target'));
    const server = new CacheServer(target, { writable: true });
    const l = await listen(server, { host: '127.0.0.1', port: 0 });
    const remote = await openStore(`${l.url}?compression=zstd`);
    try {
      const r = await copyPaths(src, remote, [DEP], { recursive: true });
      expect(r.copied.length).toBe(2);
      expect(await target.isValidPath(DEP)).toBe(true);
    } finally {
      await remote.close();
      await l.close();
      await server.close(); // its staging dir of uploads
      await target.close();
      await src.close();
    }
  });

  it('retries 5xx with backoff, maps 404/403 to absent, and fails clearly when the server is gone', async () => {
    let hits = 0;
    const srv = createServer((req, res) => {
      hits++;
      if (req.url === '/nar/forbidden') res.writeHead(403).end();
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    const t = new HttpTransport(`http://127.0.0.1:${port}`, { retries: 3, backoffMs: 5 });
    try {
      const key = `${'0'.repeat(32)}.narinfo`;
      expect(await t.getFile(key)).toBeUndefined();
      expect(await t.exists('nar/forbidden')).toBe(false);
      expect(hits, '404 and 403 are answers, not failures: never retried').toBe(2);
    } finally {
      await t.close();
      await new Promise<void>((r) => srv.close(() => r()));
    }
    // Retries: a server that fails twice, then answers.
    let n = 0;
    const flaky = createServer((_req, res) => (++n < 3 ? res.writeHead(500).end() : res.writeHead(200).end('StoreDir: /nix/store\n')));
    await new Promise<void>((r) => flaky.listen(0, '127.0.0.1', r));
    const fport = (flaky.address() as AddressInfo).port;
    const t2 = new HttpTransport(`http://127.0.0.1:${fport}`, { retries: 3, backoffMs: 5 });
    try {
      expect((await t2.getFile('nix-cache-info'))?.toString()).toBe('StoreDir: /nix/store\n');
      expect(n).toBe(3);
    } finally {
      await t2.close();
      await new Promise<void>((r) => flaky.close(() => r()));
    }
    // Gone: connection refused after the retries, one clear line.
    const t3 = new HttpTransport(`http://127.0.0.1:${fport}`, { retries: 2, backoffMs: 5, timeout: 2 });
    try {
      const e = await t3.getFile('nix-cache-info').catch((x: unknown) => x);
      expect(isStrataError(e, 'HTTP_ERROR')).toBe(true);
      expect((e as Error).message).toMatch(new RegExp(`^Cannot fetch 'http://127\\.0\\.0\\.1:${fport}/nix-cache-info': .*ECONNREFUSED.*\\(after up to 3 attempts\\)$`));
    } finally {
      await t3.close();
    }
  });

  it("retries the statuses Nix 2.8 retries (408, 429, 5xx but 501, 505 and 511), as builtin:fetchurl's download does", async () => {
    const hits = new Map<string, number>();
    const srv = createServer((req, res) => {
      const n = (hits.get(req.url!) ?? 0) + 1;
      hits.set(req.url!, n);
      const status = Number(req.url!.slice('/nar/'.length));
      if (n === 1 || status === 501) res.writeHead(status).end();
      else res.writeHead(200).end('ok');
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const t = new HttpTransport(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`, { retries: 3, backoffMs: 5 });
    try {
      for (const status of [408, 429, 503]) expect((await t.getFile(`nar/${status}`))?.toString(), String(status)).toBe('ok');
      const e = await t.getFile('nar/501').catch((x: unknown) => x);
      expect((e as Error).message).toMatch(/: HTTP 501 \(after up to 4 attempts\)$/);
      expect(Object.fromEntries(hits)).toEqual({ '/nar/408': 2, '/nar/429': 2, '/nar/503': 2, '/nar/501': 1 });
    } finally {
      await t.close();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });

  it('a stall counts as one attempt: with one retry, the second request is the last', async () => {
    let requests = 0;
    const held: Array<import('node:http').ServerResponse> = [];
    const srv = createServer((_req, res) => {
      if (++requests === 1) held.push(res); // the first is never answered
      else res.writeHead(200, { 'content-length': '2' }).end('ok');
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const t = new HttpTransport(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`, { retries: 1, timeout: 1, backoffMs: 5 });
    try {
      expect((await t.getFile('nix-cache-info'))?.toString()).toBe('ok');
      expect(requests).toBe(2);
    } finally {
      await t.close();
      for (const r of held) r.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });

  it('gives up on a server that stalls before its headers or inside a body, after the timeout', async () => {
    const held: Array<import('node:http').ServerResponse> = [];
    const srv = createServer((req, res) => {
      held.push(res);
      // nix-cache-info: headers and half a body, then nothing; anything else: no answer at all.
      if (req.url === '/nix-cache-info') res.writeHead(200, { 'content-length': '100' }).write('StoreDir: ');
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    const t = new HttpTransport(`http://127.0.0.1:${port}`, { retries: 0, timeout: 1 });
    try {
      const started = Date.now();
      const e1 = await t.getFile(`${'0'.repeat(32)}.narinfo`).catch((x: unknown) => x);
      expect(isStrataError(e1, 'HTTP_ERROR')).toBe(true);
      expect((e1 as Error).message).toMatch(/^Cannot fetch 'http:\/\/127\.0\.0\.1:\d+\/0{32}\.narinfo': .*1 s.*ETIMEDOUT/);
      // One attempt (retries: 0), however it was made.
      expect(held.filter((r) => r.req.url?.endsWith('.narinfo'))).toHaveLength(1);
      const e2 = await t.getFile('nix-cache-info').catch((x: unknown) => x);
      expect(isStrataError(e2, 'HTTP_ERROR')).toBe(true);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await t.close();
      for (const r of held) r.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });

  it('refuses a small file (narinfo, nix-cache-info) past 4 MiB, whether its length is declared or streamed', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024 + 1, 'a');
    let streamedBytes = 0;
    const srv = createServer((req, res) => {
      if (req.url === '/nix-cache-info') return void res.writeHead(200, { 'content-length': String(big.length) }).end(big);
      // No content-length: chunked, 64 KiB at a time, for as long as the client reads.
      res.writeHead(200);
      const piece = big.subarray(0, 64 * 1024);
      const more = () => {
        while (!res.destroyed && streamedBytes < 64 * 1024 * 1024) {
          streamedBytes += piece.length;
          if (!res.write(piece)) return void res.once('drain', more);
        }
        res.end();
      };
      res.on('close', () => res.destroy());
      more();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    const t = new HttpTransport(`http://127.0.0.1:${port}`, { retries: 0 });
    try {
      for (const key of ['nix-cache-info', `${'0'.repeat(32)}.narinfo`]) {
        const e = await t.getFile(key).catch((x: unknown) => x);
        expect(isStrataError(e, 'HTTP_ERROR'), key).toBe(true);
        expect((e as Error).message).toBe(`Cannot fetch 'http://127.0.0.1:${port}/${key}': it is larger than 4194304 bytes`);
      }
      expect(streamedBytes, 'the streamed file is not read to its end').toBeLessThan(64 * 1024 * 1024);
    } finally {
      await t.close();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });

  it('strata copy --from http:// runs on Node\'s own HTTP client: undici (150-300 ms to load here) is never loaded', async () => {
    ensureBuilt();
    const work = tempDir();
    const src = await filledStore(work);
    const l = await listen(new CacheServer(src), { host: '127.0.0.1', port: 0 });
    try {
      const r = await runStrata(['--no-progress', '--no-require-sigs', 'copy', '--from', l.url, '--to', join(work, 'dst'), '-r', DEPENDENT], {
        env: { XDG_CACHE_HOME: join(work, 'xdg'), NODE_DEBUG: 'module' },
      });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('copied 2 paths');
      expect(r.stderr).toMatch(/^MODULE \d+: /m); // the module loader's trace is on
      expect(r.stderr).not.toMatch(/node_modules\/undici\//);
    } finally {
      await l.close();
      await src.close();
    }
  });

  it('remembers a 404 on disk for ttl-negative seconds, as Nix does', async () => {
    const work = tempDir();
    process.env['XDG_CACHE_HOME'] = join(work, 'xdg');
    const target = await openStore(join(work, 'target'));
    const l = await listen(new CacheServer(target, { writable: true }), { host: '127.0.0.1', port: 0 });
    try {
      const c1 = await openStore(l.url);
      expect(await c1.isValidPath(DEP)).toBe(false);
      await c1.close();
      const src = await filledStore(work);
      await copyPaths(src, target, [DEP], { recursive: true, requireSigs: false });
      await src.close();
      const c2 = await openStore(l.url);
      expect(await c2.isValidPath(DEP)).toBe(false); // still the remembered 404
      await c2.close();
      const c3 = await openStore(`${l.url}?ttl-negative=0`);
      expect(await c3.isValidPath(DEP)).toBe(true);
      await c3.close();
    } finally {
      await l.close();
      await target.close();
    }
  });

  it('follows redirects (relative, to another server) and absolute NAR URLs in narinfos, as Nix 2.8 does; refuses loops and non-http targets', async () => {
    const work = tempDir();
    const root = join(work, 'cache');
    const started: Server[] = [];
    const serve = async (handler: (url: string, res: import('node:http').ServerResponse) => void): Promise<string> => {
      const srv = createServer((req, res) => handler(req.url ?? '/', res));
      started.push(srv);
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    };
    const file = (res: import('node:http').ServerResponse, rel: string) => {
      let body: Buffer;
      try {
        body = readFileSync(join(root, rel));
      } catch {
        return void res.writeHead(404).end();
      }
      res.writeHead(200).end(body);
    };
    // The NARs live on another server: the simple path's narinfo names its NAR there by an
    // absolute URL, and the front redirects every other NAR there.
    const farHits: string[] = [];
    const far = await serve((url, res) => (farHits.push(url), file(res, url.slice('/store/'.length))));
    writeVectorCache(root, 'xz', (text) => (text.includes('-simple\n') ? text.replace(/^URL: (.*)$/m, (_m, u: string) => `URL: ${far}/store/${u}`) : text));
    const front = await serve((url, res) => {
      if (url === '/nar/loop') res.writeHead(307, { location: '/nar/loop' }).end();
      else if (url.startsWith('/nar/')) res.writeHead(302, { location: `${far}/store${url}` }).end();
      else if (url === '/nix-cache-info') res.writeHead(301, { location: '/moved/nix-cache-info' }).end();
      else if (url.startsWith('/moved/')) file(res, url.slice('/moved/'.length));
      else if (url.endsWith('.narinfo')) file(res, url.slice(1));
      else res.writeHead(404).end();
    });
    try {
      await withCopyStores(work, front, async (cache, local) => {
        await copyPaths(cache, local, [DEP], { recursive: true, trustedPublicKeys: [PUBLIC_KEY] });
        expect(await local.isValidPath(DEP)).toBe(true);
        expect(await local.isValidPath(dir.parse(SIMPLE))).toBe(true);
      });
      expect(farHits.filter((u) => u.startsWith('/store/nar/'))).toHaveLength(2);
      // Real Nix substitutes the same closure through the same servers.
      if (haveNix()) {
        const r = await nixAsync('nix-store', ['--store', join(work, 'nixdst'), '-r', DEPENDENT, '--option', 'substituters', front, '--option', 'trusted-public-keys', PUBLIC_KEY]);
        expect(r.stderr).not.toMatch(/error/);
        expect(r.code).toBe(0);
      }
      // A redirect loop and a redirect out of HTTP end with one clear line each; no retries.
      const t = new HttpTransport(front, { retries: 2, backoffMs: 5 });
      const far2 = await serve((_url, res) => res.writeHead(302, { location: 'file:///etc/passwd' }).end());
      const t2 = new HttpTransport(far2, { retries: 2, backoffMs: 5 });
      try {
        const loop = await t.getStream('nar/loop').catch((e: unknown) => e);
        expect(isStrataError(loop, 'HTTP_ERROR')).toBe(true);
        expect((loop as Error).message).toMatch(/HTTP 307 after 10 redirects/);
        // Redirected to a server without the file: absent, as a 404 of the cache itself.
        expect(await t.getStream('nar/missing')).toBeUndefined();
        const e2 = await t2.getFile('nix-cache-info').catch((e: unknown) => e);
        expect(isStrataError(e2, 'HTTP_ERROR')).toBe(true);
        expect((e2 as Error).message).toMatch(/HTTP 302 to 'file:\/\/\/etc\/passwd', which is not an http\(s\) URL/);
        // Absolute URLs are for reading only.
        const e3 = await t.putFile(`${far}/store/x`, Buffer.from('x'), 'text/plain').catch((e: unknown) => e);
        expect(isStrataError(e3, 'CACHE_KEY_INVALID')).toBe(true);
      } finally {
        await t.close();
        await t2.close();
      }
    } finally {
      for (const srv of started) {
        srv.closeAllConnections();
        await new Promise<void>((r) => srv.close(() => r()));
      }
    }
  });

  it('sends the user and password of the cache URL (as curl does for Nix) to the cache only, and keeps the password out of messages', async () => {
    const seen: Array<string | undefined> = [];
    const started: Server[] = [];
    const serve = async (handler: (url: string, auth: string | undefined, res: import('node:http').ServerResponse) => void): Promise<number> => {
      const srv = createServer((req, res) => handler(req.url ?? '/', req.headers.authorization, res));
      started.push(srv);
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      return (srv.address() as AddressInfo).port;
    };
    const other = await serve((_url, auth, res) => (seen.push(auth), res.writeHead(200).end('nar')));
    const port = await serve((url, auth, res) => {
      if (auth !== `Basic ${Buffer.from('alice:s3cr%t').toString('base64')}`) res.writeHead(401).end();
      else if (url === '/nar/elsewhere.nar') res.writeHead(302, { location: `http://localhost:${other}/nar/x.nar` }).end();
      else res.writeHead(200).end('StoreDir: /nix/store\n');
    });
    const t = new HttpTransport(`http://alice:s3cr%25t@127.0.0.1:${port}`, { retries: 0 });
    try {
      expect((await t.getFile('nix-cache-info'))?.toString()).toBe('StoreDir: /nix/store\n');
      expect(t.uri).toBe(`http://127.0.0.1:${port}`);
      // Another origin a redirect leads to gets no credentials.
      expect(Buffer.concat(await (await t.getStream('nar/elsewhere.nar'))!.toArray()).toString()).toBe('nar');
      expect(seen).toEqual([undefined]);
      const wrong = new HttpTransport(`http://alice:nope@127.0.0.1:${port}`, { retries: 0 });
      const e = await wrong.getFile('nix-cache-info').catch((x: unknown) => x);
      await wrong.close();
      expect(isStrataError(e, 'HTTP_ERROR')).toBe(true);
      expect((e as Error).message).toContain('HTTP 401');
      expect((e as Error).message).not.toContain('nope');
    } finally {
      await t.close();
      for (const srv of started) {
        srv.closeAllConnections();
        await new Promise<void>((r) => srv.close(() => r()));
      }
    }
  });
});
