import { randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { Agent, get as httpGet, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { describe, expect, it, onTestFinished } from 'vitest';

import { isStrataError } from '../../src/core/error.js';
import { parseNarInfo } from '../../src/core/narinfo.js';
import { StoreDir } from '../../src/core/store-path.js';
import { CacheServer } from '../../src/serve/cache-server.js';
import { listen } from '../../src/serve/listen.js';
import { ServeMetrics } from '../../src/serve/metrics.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { startWaitingChild } from '../support/child.js';
import { ensureBuilt, ROOT } from '../support/cli.js';
import { storeView } from '../support/store-view.js';
import { tempDir } from '../support/tmp.js';
import { DEPENDENT, narinfosOf } from '../binary-cache/_cache.js';
import { filledStore } from './_serve.js';

const dir = new StoreDir();
const DEP = dir.parse(DEPENDENT);

async function body(b: Buffer | Readable | undefined): Promise<string> {
  if (b === undefined) return '';
  if (Buffer.isBuffer(b)) return b.toString();
  let s = '';
  for await (const c of b) s += (c as Buffer).toString('latin1');
  return s;
}

describe('CacheServer.handle (no socket)', () => {
  it('answers nix-cache-info, narinfos (HEAD without a body), closures and metrics; 404 for unknown paths', async () => {
    const work = tempDir();
    const store = await filledStore(work);
    const server = new CacheServer(store, { compression: 'none' });
    try {
      const info = await server.handle({ method: 'GET', url: '/nix-cache-info' });
      expect(await body(info.body)).toBe('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\nStrataClosure: 1\nStrataNars: 1\n');
      const ni = await server.handle({ method: 'GET', url: `/${DEP.hashPart}.narinfo` });
      expect(ni.status).toBe(200);
      const parsed = parseNarInfo(await body(ni.body));
      expect(parsed.path.equals(DEP)).toBe(true);
      expect(parsed.url).toBe(`nar/${DEP.hashPart}-${parsed.narHash.toNix32()}.nar`);
      expect(parsed.fileHash?.equals(parsed.narHash)).toBe(true);
      const head = await server.handle({ method: 'HEAD', url: `/${DEP.hashPart}.narinfo` });
      expect(head.status).toBe(200);
      expect(head.body).toBeUndefined();
      expect(Number(head.headers['content-length'])).toBeGreaterThan(100);
      const nar = await server.handle({ method: 'GET', url: `/${parsed.url}` });
      expect(nar.status).toBe(200);
      expect((await body(nar.body)).length).toBe(parsed.narSize);
      // A stale NAR URL (other NAR hash) is not served.
      const stale = await server.handle({ method: 'GET', url: `/nar/${DEP.hashPart}-${'0'.repeat(52)}.nar` });
      expect(stale.status).toBe(404);
      expect((await server.handle({ method: 'GET', url: `/${'0'.repeat(32)}.narinfo` })).status).toBe(404);
      const closure = await body((await server.handle({ method: 'GET', url: `/closure/${DEP.hashPart}` })).body);
      expect(closure.split('\n\n').map((t) => parseNarInfo(t.endsWith('\n') ? t : `${t}\n`).path.name).sort()).toEqual(['dependent', 'simple']);
      const metrics = await body((await server.handle({ method: 'GET', url: '/metrics' })).body);
      expect(metrics).toContain('strata_serve_layer_hits_total{layer="store"}');
    } finally {
      await store.close();
    }
  });

  it('answers a small uncompressed NAR from one buffer and streams a large one', async () => {
    const work = tempDir();
    const store = await filledStore(work);
    const server = new CacheServer(store, { compression: 'none' });
    try {
      const big = await store.addText('big', 'x'.repeat(100 * 1024), []);
      for (const [path, buffered] of [
        [DEP, true],
        [big.path, false],
      ] as const) {
        const ni = parseNarInfo(await body((await server.handle({ method: 'GET', url: `/${path.hashPart}.narinfo` })).body));
        const nar = await server.handle({ method: 'GET', url: `/${ni.url}` });
        expect(Buffer.isBuffer(nar.body), path.name).toBe(buffered);
        expect(Number(nar.headers['content-length'])).toBe(ni.narSize);
        expect((await body(nar.body)).length).toBe(ni.narSize);
      }
    } finally {
      await store.close();
    }
  });

  it('never reads outside the store: traversal, encoded slashes and odd targets are 404', async () => {
    const work = tempDir();
    const store = await filledStore(work);
    const server = new CacheServer(store);
    try {
      const targets = [
        '/../../etc/passwd',
        '/nar/../../etc/passwd',
        '/nar/..%2f..%2fetc%2fpasswd',
        '/%2e%2e/%2e%2e/etc/passwd',
        `/${DEP.hashPart}.narinfo/../../etc/passwd`,
        `/nar/${DEP.hashPart}-${'1'.repeat(52)}.nar/../../../etc/passwd`,
        '//etc/passwd',
        '/etc/passwd',
        `/${DEP.hashPart}%2enarinfo`,
        `/${DEP.hashPart}.narinfo\0`,
        '\\..\\..\\etc\\passwd',
        `/${DEP.baseName}`,
        '/nar/' + 'a'.repeat(52) + '.nar.exe',
        '/' + 'x'.repeat(20000),
      ];
      for (const url of targets) {
        const r = await server.handle({ method: 'GET', url });
        expect([404, 414], url).toContain(r.status);
        expect(await body(r.body)).not.toContain('root:');
      }
      expect((await server.handle({ method: 'DELETE', url: '/nix-cache-info' })).status).toBe(405);
    } finally {
      await store.close();
    }
  });

  it('refuses uploads unless writable, and a PUT narinfo whose NAR does not match leaves nothing valid', async () => {
    const work = tempDir();
    const target = await openStore(join(work, 'target'));
    const ro = new CacheServer(target);
    const rw = new CacheServer(target, { writable: true });
    try {
      const n = narinfosOf('none').find((x) => x.text.includes('-simple\n'))!;
      const nar = Buffer.from(n.nar_file_b64, 'base64');
      expect((await ro.handle({ method: 'PUT', url: `/${n.nar_file}`, body: Readable.from([nar]) })).status).toBe(403);
      // Upload the NAR, then a narinfo that lies about its hash.
      const up = await rw.handle({ method: 'PUT', url: `/${n.nar_file}`, body: Readable.from([nar]) });
      expect(up.status).toBe(200);
      const lying = n.text.replace(/NarHash: sha256:\w+/, `NarHash: sha256:${'1'.repeat(52)}`).replace(/^FileHash.*\n/m, '');
      const hash = n.file.slice(0, 32);
      const r = await rw.handle({ method: 'PUT', url: `/${hash}.narinfo`, body: Readable.from([Buffer.from(lying)]) });
      expect(r.status).toBe(400);
      expect(await body(r.body)).toMatch(/^Cannot .*mismatch/);
      expect(await target.queryAllValidPaths()).toEqual([]);
      // The honest narinfo is accepted.
      const ok = await rw.handle({ method: 'PUT', url: `/${hash}.narinfo`, body: Readable.from([Buffer.from(n.text)]) });
      expect(ok.status).toBe(200);
      expect((await target.queryAllValidPaths()).map((p) => p.name)).toEqual(['simple']);
      // A narinfo PUT under another hash part is refused.
      const other = await rw.handle({ method: 'PUT', url: `/${'0'.repeat(32)}.narinfo`, body: Readable.from([Buffer.from(n.text)]) });
      expect(other.status).toBe(400);
    } finally {
      await rw.close();
      await target.close();
    }
  });
});

describe('memoised narinfos', () => {
  /**
   * A filled store, reopened (the handle that filled it holds temp roots that would keep its
   * paths alive), and a path nothing refers to, so it can be deleted.
   */
  async function storeWithLeaf() {
    const work = tempDir();
    await (await filledStore(work)).close();
    const store = await openStore(join(work, 'local'));
    const leaf = (await store.queryAllValidPaths()).find((p) => p.name === 'tree1')!;
    return { work, store, leaf };
  }

  it('a hit re-reads no path info, HEAD leaves the memoised GET answer whole, and a deleted path is 404 at once', async () => {
    const { work, store, leaf } = await storeWithLeaf();
    let infoReads = 0;
    const counted = storeView(store, { queryPathInfo: (p) => (infoReads++, store.queryPathInfo(p)) });
    const server = new CacheServer(counted, { compression: 'none' });
    try {
      const url = `/${leaf.hashPart}.narinfo`;
      const first = await body((await server.handle({ method: 'GET', url })).body);
      expect(infoReads).toBe(1);
      const head = await server.handle({ method: 'HEAD', url });
      expect(head.status).toBe(200);
      expect(head.body).toBeUndefined();
      expect(Number(head.headers['content-length'])).toBe(Buffer.byteLength(first));
      const again = await server.handle({ method: 'GET', url });
      expect(await body(again.body)).toBe(first);
      expect(infoReads).toBe(1);
      // Another handle on the same store deletes the path, as `strata delete` in another process would.
      const other = await openStore(join(work, 'local'));
      try {
        expect((await other.deletePaths([leaf])).deleted.map((p) => p.name)).toEqual(['tree1']);
      } finally {
        await other.close();
      }
      expect((await server.handle({ method: 'GET', url })).status).toBe(404);
      expect((await server.handle({ method: 'HEAD', url })).status).toBe(404);
    } finally {
      await store.close();
    }
  });

  it('a path deleted between its lookup and its NAR read (a GC racing the request) is 404, not 500', async () => {
    const { work, store, leaf } = await storeWithLeaf();
    const other = await openStore(join(work, 'local'));
    // The deletion lands just as the NAR is opened: after every check the server makes first.
    const racing = storeView(store, {
      narFromPath: async (p) => {
        await other.deletePaths([p]);
        return store.narFromPath(p);
      },
    });
    const server = new CacheServer(racing, { compression: 'none' });
    try {
      const ni = parseNarInfo(await body((await server.handle({ method: 'GET', url: `/${leaf.hashPart}.narinfo` })).body));
      const nar = await server.handle({ method: 'GET', url: `/${ni.url}` });
      expect(nar.status).toBe(404);
      expect(await body(nar.body)).toMatch(/is not valid/);
    } finally {
      await other.close();
      await store.close();
    }
  });

  for (const withToken of [true, false]) {
    it(`${withToken ? 'with' : 'without'} the store's change token: ${withToken ? 'a hit makes no query until something is committed' : 'every hit is re-checked with a query'}; a deleted path is 404`, async () => {
      const { work, store, leaf } = await storeWithLeaf();
      let checks = 0;
      const counted = storeView(store, {
        isValidPath: (p) => (checks++, store.isValidPath(p)),
        queryPathInfo: (p) => (checks++, store.queryPathInfo(p)),
        // A store that cannot tell cheaply (the layered store, a proxy) has no token.
        ...(withToken ? {} : { changeToken: undefined }),
      });
      const server = new CacheServer(counted, { compression: 'none' });
      const other = await openStore(join(work, 'local'));
      try {
        const url = `/${leaf.hashPart}.narinfo`;
        expect((await server.handle({ method: 'GET', url })).status).toBe(200);
        checks = 0;
        for (let i = 0; i < 3; i++) expect((await server.handle({ method: i === 1 ? 'HEAD' : 'GET', url })).status).toBe(200);
        expect(server.answerFromMemo('GET', url)?.status).toBe(withToken ? 200 : undefined);
        expect(checks).toBe(withToken ? 0 : 3);
        // Any commit (here an unrelated path) costs the next hit one query, then none again.
        await other.addText('unrelated', 'u', []);
        checks = 0;
        expect(server.answerFromMemo('GET', url)).toBeUndefined();
        expect((await server.handle({ method: 'GET', url })).status).toBe(200);
        expect((await server.handle({ method: 'GET', url })).status).toBe(200);
        expect(checks).toBe(withToken ? 1 : 2);
        await other.deletePaths([leaf]);
        expect(server.answerFromMemo('GET', url)).toBeUndefined();
        expect((await server.handle({ method: 'GET', url })).status).toBe(404);
      } finally {
        await other.close();
        await store.close();
      }
    });
  }

  for (const withToken of [true, false]) {
  it(`a signature added by another process shows in the next answer (the memo is not served stale), ${withToken ? 'with' : 'without'} the store's change token`, async () => {
      const { work, store, leaf } = await storeWithLeaf();
      // Without a token (the layered store's case) a hit is re-checked by a query: of the row, not only its validity.
      const served = withToken ? store : storeView(store, { changeToken: undefined });
      const server = new CacheServer(served, { compression: 'none' });
      const other = await openStore(join(work, 'local'));
      try {
        const url = `/${leaf.hashPart}.narinfo`;
        const before = parseNarInfo(await body((await server.handle({ method: 'GET', url })).body));
        expect(server.answerFromMemo('GET', url)?.status).toBe(withToken ? 200 : undefined);
        expect(parseNarInfo(await body((await server.handle({ method: 'GET', url })).body)).sigs).toEqual(before.sigs);
        const sig = `late-key-1:${Buffer.alloc(64, 7).toString('base64')}`;
        await other.addSignatures(leaf, [sig]);
        const after = parseNarInfo(await body((await server.handle({ method: 'GET', url })).body));
        expect(after.sigs).toEqual([...before.sigs, sig].sort());
        expect(server.answerFromMemo('GET', url)?.status).toBe(withToken ? 200 : undefined);
        const again = parseNarInfo(await body((await server.handle({ method: 'GET', url })).body));
        expect(again.sigs).toEqual(after.sigs);
      } finally {
        await other.close();
        await store.close();
      }
    });
  }

  it('over HTTP: a memoised narinfo deleted from the store is 404 on the same keep-alive connection', async () => {
    const { work, store, leaf } = await storeWithLeaf();
    const server = new CacheServer(store, { compression: 'none' });
    const l = await listen(server, { host: '127.0.0.1', port: 0 });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const get = (path: string) =>
      new Promise<{ status: number; text: string; socket: unknown }>((resolve, reject) => {
        httpGet(`${l.url}${path}`, { agent }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, text, socket: res.socket }));
        }).on('error', reject);
      });
    try {
      const url = `/${leaf.hashPart}.narinfo`;
      const a = await get(url);
      const b = await get(url);
      expect(a.status).toBe(200);
      expect(b.text).toBe(a.text);
      expect(parseNarInfo(b.text).path.equals(leaf)).toBe(true);
      const other = await openStore(join(work, 'local'));
      try {
        await other.deletePaths([leaf]);
      } finally {
        await other.close();
      }
      const c = await get(url);
      expect(c.status).toBe(404);
      expect(c.socket).toBe(a.socket);
      expect(server.metrics.render()).toContain('strata_serve_requests_total{route="narinfo",status="404"} 1');
    } finally {
      agent.destroy();
      await l.close();
      await store.close();
    }
  });
});

describe('metrics', () => {
  it('counts requests by route and status and renders a cumulative latency histogram', () => {
    const m = new ServeMetrics();
    m.observe('narinfo', 200, 500, 0.0001);
    m.observe('narinfo', 200, 500, 0.002);
    m.observe('narinfo', 404, 10, 0.0003);
    m.observe('nar', 200, 1 << 20, 120);
    const text = m.render();
    expect(text).toContain('strata_serve_requests_total{route="narinfo",status="200"} 2');
    expect(text).toContain('strata_serve_requests_total{route="narinfo",status="404"} 1');
    expect(text).toContain('strata_serve_requests_total{route="nar",status="200"} 1');
    expect(text).toContain('strata_serve_response_bytes_total{route="narinfo"} 1010');
    expect(text).toContain('strata_serve_request_duration_seconds_bucket{le="0.0005"} 2\n');
    expect(text).toContain('strata_serve_request_duration_seconds_bucket{le="0.001"} 2\n');
    expect(text).toContain('strata_serve_request_duration_seconds_bucket{le="0.0025"} 3\n');
    expect(text).toContain('strata_serve_request_duration_seconds_bucket{le="60"} 3\n');
    expect(text).toContain('strata_serve_request_duration_seconds_bucket{le="+Inf"} 4\n');
    expect(text).toContain('strata_serve_request_duration_seconds_count 4\n');
  });
});

describe('uploads staging', () => {
  it("removes the upload staging dir of a strata serve killed mid-upload, never a live server's", { timeout: 60_000 }, async () => {
    ensureBuilt();
    const tmp = tempDir();
    const oldTmp = process.env['TMPDIR'];
    process.env['TMPDIR'] = tmp;
    // Restored however the test ends (a timeout included): later tests must not inherit it.
    onTestFinished(() => {
      if (oldTmp === undefined) delete process.env['TMPDIR'];
      else process.env['TMPDIR'] = oldTmp;
    });
    const uploadKey = `/nar/${'1'.repeat(52)}.nar`;
    // A writable server in its own process that has staged an upload, then waits.
    const owner = async () => {
      const code = `
        const { CacheServer } = await import(${JSON.stringify(join(ROOT, 'dist', 'serve', 'cache-server.js'))});
        const { openStore } = await import(${JSON.stringify(join(ROOT, 'dist', 'store', 'open.js'))});
        const { readdirSync } = await import('node:fs');
        const { Readable } = await import('node:stream');
        const staged = () => readdirSync(process.env.TMPDIR).filter((n) => n.startsWith('strata-serve-uploads-'));
        const before = staged();
        const server = new CacheServer(await openStore(process.argv[1]), { writable: true });
        const r = await server.handle({ method: 'PUT', url: ${JSON.stringify(uploadKey)}, body: Readable.from([Buffer.alloc(1 << 20)]) });
        if (r.status !== 200) throw new Error('upload ' + r.status);
        process.stdout.write(staged().find((n) => !before.includes(n)) + '\\n');
        setInterval(() => {}, 1000);`;
      const child = await startWaitingChild(code, [join(tempDir(), 'store')], { ...process.env, TMPDIR: tmp });
      return { dir: join(tmp, child.line), kill: child.kill };
    };
    const dead = await owner();
    const live = await owner();
    const store = await openStore(join(tempDir(), 'mine'));
    const server = new CacheServer(store, { writable: true });
    try {
      await dead.kill();
      expect(readdirSync(join(dead.dir, 'nar'))).toHaveLength(1);
      const r = await server.handle({ method: 'PUT', url: uploadKey, body: Readable.from([Buffer.alloc(16)]) });
      expect(r.status).toBe(200);
      const left = readdirSync(tmp).filter((n) => n.startsWith('strata-serve-uploads-')).map((n) => join(tmp, n));
      expect(left).not.toContain(dead.dir);
      expect(left).toContain(live.dir);
      expect(left).toHaveLength(2);
      await server.close();
      expect(readdirSync(tmp).filter((n) => n.startsWith('strata-serve-uploads-')).map((n) => join(tmp, n))).toEqual([live.dir]);
    } finally {
      await live.kill();
      await store.close();
    }
  });
});

describe('listen() adapter', () => {
  /** Descriptors of this process open on files whose path contains `name`. */
  const openOn = (name: string) =>
    readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).includes(name);
      } catch {
        return false;
      }
    }).length;
  /** {@link openOn} once it reaches 0 or `ms` have passed: the server notices closed sockets a few turns later. */
  const openAfter = async (name: string, ms: number) => {
    for (let t = 0; t < ms / 20 && openOn(name) > 0; t++) await new Promise((r) => setTimeout(r, 20));
    return openOn(name);
  };
  /** Adds `mib` MiB of random bytes (no compressor shrinks them) to `store`; its NAR's URL on `base`. */
  const bigNar = async (work: string, store: Store, base: string, mib: number) => {
    writeFileSync(join(work, 'big.bin'), randomBytes(mib * 1024 * 1024));
    const big = await store.addPath(join(work, 'big.bin'));
    const ni = parseNarInfo(await (await fetch(`${base}/${big.path.hashPart}.narinfo`)).text());
    return { baseName: big.path.baseName, path: `/${ni.url}`, url: `${base}/${ni.url}` };
  };

  it('releases the NAR it was reading when a client HEADs a compressed NAR or goes away mid-download', async () => {
    const work = tempDir();
    const store = await filledStore(work);
    const l = await listen(new CacheServer(store, { compression: 'zstd' }), { host: '127.0.0.1', port: 0 });
    try {
      // Random bytes: zstd cannot shrink them, so a download is still running when the client leaves.
      const { url, baseName } = await bigNar(work, store, l.url, 16);
      for (let i = 0; i < 3; i++) {
        const head = await fetch(url, { method: 'HEAD' });
        expect(head.status).toBe(200);
        await new Promise<void>((resolve, reject) => {
          const req = httpRequest(url, (res) => {
            res.once('data', () => {
              req.destroy();
              resolve();
            });
          });
          req.on('error', reject);
          req.end();
        });
      }
      // The server notices the closed sockets within a few turns of the event loop.
      expect(await openAfter(baseName, 1000)).toBe(0);
      expect((await fetch(`${l.url}/nix-cache-info`)).status).toBe(200);
    } finally {
      await l.close();
      await store.close();
    }
  });

  it('drops a client that never finishes its request headers, or stops reading a NAR, and keeps serving others', async () => {
    // Node's defaults are none at all once requestTimeout is off (as uploads need): a slowloris
    // client, or one gone silent mid-NAR, then held a socket (and the NAR's open file) for good.
    const plain = await filledStore(tempDir());
    const defaults = await listen(new CacheServer(plain), { host: '127.0.0.1', port: 0 });
    try {
      expect(defaults.server.headersTimeout).toBe(60_000);
      expect(defaults.server.timeout).toBe(300_000);
    } finally {
      await defaults.close();
      await plain.close();
    }
    const work = tempDir();
    const store = await filledStore(work);
    const l = await listen(new CacheServer(store, { compression: 'none' }), { host: '127.0.0.1', port: 0, headersTimeoutMs: 500, idleTimeoutMs: 1000 });
    try {
      const big = await bigNar(work, store, l.url, 32);
      // A client that sends half a request head: answered 408 and closed.
      const slowloris = new Promise<string>((resolve, reject) => {
        const s = connect(l.port, '127.0.0.1');
        let got = '';
        s.on('data', (c) => (got += c.toString('latin1')));
        s.on('close', () => resolve(got));
        s.on('error', reject);
        s.write('GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-Slow: ');
      });
      // A client that asks for a 32 MiB NAR and stops reading after the first bytes.
      const stalled = connect(l.port, '127.0.0.1');
      stalled.on('error', () => {});
      const first = new Promise<string>((resolve) => stalled.once('data', (c) => resolve(c.toString('latin1', 0, 16))));
      stalled.write(`GET ${big.path} HTTP/1.1\r\nHost: x\r\n\r\n`);
      try {
        expect(await first).toMatch(/^HTTP\/1\.1 200/);
        stalled.pause();
        // Others are served meanwhile.
        expect((await fetch(`${l.url}/nix-cache-info`)).status).toBe(200);
        expect(await slowloris).toMatch(/^HTTP\/1\.1 408/);
        // The server gives the silent socket up, and the NAR's file with it, while the client still sits there.
        expect(await openAfter(big.baseName, 5000)).toBe(0);
      } finally {
        stalled.destroy();
      }
      expect((await fetch(`${l.url}/nix-cache-info`)).status).toBe(200);
    } finally {
      await l.close();
      await store.close();
    }
  });

  it('refuses an upload to a read-only server and closes the connection instead of reading an endless body', async () => {
    const store = await filledStore(tempDir());
    const l = await listen(new CacheServer(store), { host: '127.0.0.1', port: 0 });
    try {
      const got = await new Promise<{ answer: string; sent: number }>((resolve, reject) => {
        const s = connect(l.port, '127.0.0.1');
        let answer = '';
        let sent = 0;
        const chunk = Buffer.alloc(64 * 1024);
        const timer = setInterval(() => {
          if (sent < 256 * 1024 * 1024 && !s.destroyed) s.write(chunk, () => (sent += chunk.length));
        }, 5);
        s.on('data', (c) => (answer += c.toString()));
        s.on('close', () => (clearInterval(timer), resolve({ answer, sent })));
        s.on('error', () => undefined);
        setTimeout(() => (clearInterval(timer), s.destroy(), reject(new Error(`not closed; sent ${sent}`))), 10_000);
        s.write(`PUT /nar/${'1'.repeat(52)}.nar HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n`);
      });
      expect(got.answer).toMatch(/^HTTP\/1\.1 403 /);
      expect(got.answer).toMatch(/\r\nConnection: close\r\n/i);
      expect((await fetch(`${l.url}/nix-cache-info`)).status).toBe(200);
    } finally {
      await l.close();
      await store.close();
    }
  });

  it('a port already in use is one clear error naming the address', async () => {
    const store = await filledStore(tempDir());
    const first = await listen(new CacheServer(store), { host: '127.0.0.1', port: 0 });
    try {
      const e = await listen(new CacheServer(store), { host: '127.0.0.1', port: first.port }).catch((x: unknown) => x);
      expect(isStrataError(e, 'LISTEN_FAILED')).toBe(true);
      expect((e as Error).message).toBe(`Cannot listen on 127.0.0.1:${first.port}: the address is already in use`);
    } finally {
      await first.close();
      await store.close();
    }
  });

  it('answers 431 to huge headers and keeps serving', async () => {
    const work = tempDir();
    const store = await filledStore(work);
    const l = await listen(new CacheServer(store), { host: '127.0.0.1', port: 0 });
    try {
      const raw = await new Promise<string>((resolve, reject) => {
        const s = connect(l.port, '127.0.0.1');
        let got = '';
        s.on('data', (c) => (got += c.toString()));
        s.on('close', () => resolve(got));
        s.on('error', reject);
        s.write(`GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
      });
      expect(raw).toMatch(/^HTTP\/1\.1 431/);
      const res = await fetch(`${l.url}/nix-cache-info`);
      expect(res.status).toBe(200);
    } finally {
      await l.close();
      await store.close();
    }
  });
});
