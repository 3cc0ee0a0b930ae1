/**
 * strata serve's `nars/` endpoint (many uncompressed NARs back to back in one answer) and the
 * client that cuts them apart by NarSize: what it serves, what it refuses, and that a client
 * given bad bytes, too few bytes or a refusal still verifies every NAR and makes nothing valid.
 */
import { appendFileSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { describe, expect, it } from 'vitest';

import { isStrataError } from '../../src/core/error.js';
import { parseNarInfo } from '../../src/core/narinfo.js';
import { StoreDir } from '../../src/core/store-path.js';
import { CacheServer, type ServeResponse } from '../../src/serve/cache-server.js';
import { listen } from '../../src/serve/listen.js';
import { parseRoute } from '../../src/serve/route.js';
import { copyPaths } from '../../src/store/copy.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import type { PathInfo } from '../../src/store/store.js';
import { substitutePaths } from '../../src/store/substitute.js';
import { storeView } from '../support/store-view.js';
import { tempDir } from '../support/tmp.js';
import { filledStore } from '../serve/_serve.js';
import { DEPENDENT, narOf, withCopyStores, writeVectorCache } from './_cache.js';

const dir = new StoreDir();
const DEP = dir.parse(DEPENDENT);
const SIMPLE_PATH = '/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple';

async function bytesOf(b: Buffer | Readable | undefined): Promise<Buffer> {
  if (b === undefined) return Buffer.alloc(0);
  if (Buffer.isBuffer(b)) return b;
  return Buffer.concat(await b.toArray());
}

/** `<hash part>-<NAR hash>` of every path of the store, as `nars/` names them. */
async function servedNames(server: CacheServer): Promise<Array<{ name: string; path: string; narSize: number }>> {
  const out = [];
  for (const p of await server.store.queryAllValidPaths()) {
    const ni = parseNarInfo(await bytesOf((await server.handle({ method: 'GET', url: `/${p.hashPart}.narinfo` })).body));
    out.push({ name: ni.url.slice('nar/'.length, -'.nar'.length), path: dir.print(p), narSize: ni.narSize });
  }
  return out;
}

/** An HTTP server answering through `server`, with `tamper` given each `nars/` answer first. */
async function tamperingServer(server: CacheServer, tamper: (res: ServeResponse, body: Buffer, http: ServerResponse) => boolean): Promise<{ url: string; close: () => Promise<void>; nars: () => number; nar: () => number }> {
  let nars = 0;
  let nar = 0;
  const srv = createServer((req: IncomingMessage, http: ServerResponse) => {
    void (async () => {
      const res = await server.handle({ method: req.method ?? 'GET', url: req.url ?? '/' });
      const body = await bytesOf(res.body);
      if (req.url?.startsWith('/nar/')) nar++;
      if (/^\/nars(\.zst|\.xz)?\//.test(req.url ?? '')) {
        nars++;
        if (tamper(res, body, http)) return;
      }
      http.writeHead(res.status, res.headers).end(body);
    })();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    nars: () => nars,
    nar: () => nar,
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

describe('strata serve: nars/', () => {
  it('answers many NARs back to back, byte for byte the NARs of their paths; a stale or unknown one makes it a 404', async () => {
    const work = tempDir();
    // Reopened: the handle that filled it holds temp roots that would keep its paths alive.
    await (await filledStore(work)).close();
    const store = await openStore(join(work, 'local'));
    const server = new CacheServer(store, { compression: 'none' });
    try {
      expect((await bytesOf((await server.handle({ method: 'GET', url: '/nix-cache-info' })).body)).toString()).toContain('\nStrataNars: 1\n');
      const names = await servedNames(server);
      expect(names.length).toBeGreaterThan(2);
      const res = await server.handle({ method: 'GET', url: `/nars/${names.map((n) => n.name).join(',')}` });
      expect(res.status).toBe(200);
      const body = await bytesOf(res.body);
      expect(Number(res.headers['content-length'])).toBe(body.length);
      expect(body.equals(Buffer.concat(names.map((n) => narOf(dir.parse(n.path)))))).toBe(true);
      const stale = `${names[0]!.name.slice(0, 33)}${'0'.repeat(52)}`;
      expect((await server.handle({ method: 'GET', url: `/nars/${names[1]!.name},${stale}` })).status).toBe(404);
      expect((await server.handle({ method: 'GET', url: `/nars/${names[1]!.name},${'0'.repeat(32)}-${'0'.repeat(52)}` })).status).toBe(404);
      // Infos the closure answer memoised are not trusted past a deletion (by another process).
      // tree1: nothing refers to it.
      const leaf = names.find((n) => n.path.endsWith('-tree1'))!;
      const leafPath = dir.parse(leaf.path);
      expect((await server.handle({ method: 'GET', url: `/closure/${leafPath.hashPart}` })).status).toBe(200);
      expect((await server.handle({ method: 'GET', url: `/nars/${leaf.name}` })).status).toBe(200);
      const other = await openStore(join(work, 'local'));
      try {
        expect((await other.deletePaths([leafPath])).deleted.map((p) => p.name)).toEqual(['tree1']);
      } finally {
        await other.close();
      }
      expect((await server.handle({ method: 'GET', url: `/nars/${leaf.name}` })).status).toBe(404);
    } finally {
      await store.close();
    }
  });

  it('keeps the order of many small NARs (read several at once) around a large one (streamed)', async () => {
    const work = tempDir();
    const store = (await openStore(join(work, 'local'))) as LocalStore;
    const server = new CacheServer(store, { compression: 'none' });
    try {
      const paths = [];
      for (let i = 0; i < 40; i++) paths.push((await store.addText(`small-${i}`, `small ${i}\n`.repeat(i + 1), [])).path);
      // Past the 64 KiB read whole, in the middle of the small ones.
      paths.splice(20, 0, (await store.addText('large', Buffer.alloc(300 * 1024, 'L'), [])).path);
      const infos = await Promise.all(paths.map(async (p) => (await store.queryPathInfo(p))!));
      const res = await server.handle({ method: 'GET', url: `/nars/${infos.map((i) => `${i.path.hashPart}-${i.narHash.toNix32()}`).join(',')}` });
      expect(res.status).toBe(200);
      const expected = Buffer.concat(await Promise.all(paths.map(async (p) => Buffer.concat(await (await store.narFromPath(p)).toArray()))));
      expect((await bytesOf(res.body)).equals(expected)).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('cuts the answer when a NAR is not the size recorded (files changed behind the store)', async () => {
    const work = tempDir();
    const store = (await filledStore(work)) as LocalStore;
    const server = new CacheServer(store, { compression: 'none' });
    try {
      const names = await servedNames(server);
      const simple = names.find((n) => n.path.endsWith('-simple'))!;
      const file = store.realPath(dir.parse(simple.path));
      expect(statSync(file).isFile()).toBe(true);
      appendFileSync(file, 'more');
      const res = await server.handle({ method: 'GET', url: `/nars/${names.map((n) => n.name).join(',')}` });
      expect(res.status).toBe(200);
      const e = await bytesOf(res.body).catch((x: unknown) => x);
      expect(isStrataError(e, 'SIZE_MISMATCH'), String(e)).toBe(true);
      expect((e as Error).message).toBe(`Cannot serve the NAR of '${simple.path}': it is not the ${simple.narSize} bytes recorded`);
    } finally {
      await store.close();
    }
  });

  it('a NAR request after its narinfo (or a closure) reads no path info again while nothing is committed', async () => {
    const work = tempDir();
    const store = await filledStore(work);
    let infoReads = 0;
    const counted = storeView(store, { queryPathInfo: (p) => (infoReads++, store.queryPathInfo(p)) });
    const server = new CacheServer(counted, { compression: 'none' });
    try {
      const ni = parseNarInfo(await bytesOf((await server.handle({ method: 'GET', url: `/${DEP.hashPart}.narinfo` })).body));
      expect(infoReads).toBe(1);
      const nar = await server.handle({ method: 'GET', url: `/${ni.url}` });
      expect(nar.status).toBe(200);
      expect((await bytesOf(nar.body)).equals(narOf(DEP))).toBe(true);
      expect(infoReads).toBe(1);
      // Read to the end: an answer left unread would go on reading the NAR after the test.
      const many = await server.handle({ method: 'GET', url: `/nars/${ni.url.slice(4, -4)}` });
      expect(many.status).toBe(200);
      expect((await bytesOf(many.body)).equals(narOf(DEP))).toBe(true);
      expect(infoReads).toBe(1);
    } finally {
      await store.close();
    }
  });

  it('a HEAD of nars/ reads no NAR; a GET dropped after its first piece stops reading', async () => {
    const work = tempDir();
    const store = await filledStore(work);
    const opened: Readable[] = [];
    let whole = 0;
    const counted = storeView(store, {
      narFromPath: async (p) => {
        const s = await store.narFromPath(p);
        opened.push(s);
        return s;
      },
      narBytes: async (p) => (whole++, store.narBytes(p)),
    });
    const server = new CacheServer(counted, { compression: 'none' });
    try {
      const served = await servedNames(server);
      const names = served.map((n) => n.name).join(',');
      const head = await server.handle({ method: 'HEAD', url: `/nars/${names}` });
      expect(head.status).toBe(200);
      expect(head.body).toBeUndefined();
      await new Promise((r) => setTimeout(r, 50));
      expect([opened.length, whole]).toEqual([0, 0]);
    } finally {
      await store.close();
    }
  });

  it('a GET of nars/ dropped mid-answer stops the NAR it is streaming', async () => {
    const work = tempDir();
    const store = (await openStore(join(work, 'local'))) as LocalStore;
    const big = (await store.addText('big', Buffer.alloc(8 << 20, 'B'), [])).path;
    const info = (await store.queryPathInfo(big))!;
    const opened: Readable[] = [];
    const counted = storeView(store, {
      narFromPath: async (p) => {
        const s = await store.narFromPath(p);
        opened.push(s);
        return s;
      },
    });
    const server = new CacheServer(counted, { compression: 'none' });
    try {
      const get = await server.handle({ method: 'GET', url: `/nars/${big.hashPart}-${info.narHash.toNix32()}` });
      const body = get.body as Readable;
      await new Promise((r) => body.once('readable', r));
      body.destroy();
      await new Promise((r) => setTimeout(r, 50));
      expect(opened).toHaveLength(1);
      expect([opened[0]!.destroyed, opened[0]!.readableEnded]).toEqual([true, false]);
    } finally {
      await store.close();
    }
  });

  it('takes at most 90 NARs per request (the target stays under 8 KiB)', () => {
    const one = `${'0'.repeat(32)}-${'1'.repeat(52)}`;
    const route = parseRoute(`/nars/${Array(90).fill(one).join(',')}`);
    expect(route?.kind).toBe('nars');
    expect(route?.kind === 'nars' && route.items[89]).toEqual({ hashPart: '0'.repeat(32), narHash: '1'.repeat(52) });
    expect(`/nars/${Array(90).fill(one).join(',')}`.length).toBeLessThan(8 * 1024);
    expect(parseRoute(`/nars/${Array(91).fill(one).join(',')}`)).toBeUndefined();
    expect(parseRoute(`/nars/${'0'.repeat(32)}`)).toBeUndefined();
    expect(parseRoute(`/nars/${one},`)).toBeUndefined();
    expect(parseRoute(`/nars.zst/${one}`)).toEqual({ kind: 'nars', items: [{ hashPart: '0'.repeat(32), narHash: '1'.repeat(52) }], compression: 'zstd' });
    expect(parseRoute(`/nars.xz/${one}`)).toMatchObject({ kind: 'nars', compression: 'xz' });
    expect(parseRoute(`/nars/${one}`)).toMatchObject({ kind: 'nars', compression: 'none' });
    expect(parseRoute(`/nars.bz2/${one}`)).toBeUndefined();
  });
});

describe('strata copy from strata serve over nars/', () => {
  for (const compression of ['none', 'zstd', 'xz'] as const) {
    const ext = { none: '', zstd: '.zst', xz: '.xz' }[compression];
    it(`from a server offering ${compression} NARs: one closure request and one nars${ext}/ request, no request per NAR`, async () => {
      const work = tempDir();
      const src = await filledStore(work);
      const server = new CacheServer(src, { compression });
      const l = await listen(server, { host: '127.0.0.1', port: 0 });
      try {
        await withCopyStores(work, l.url, async (cache, local) => {
          const r = await copyPaths(cache, local, [DEP], { recursive: true, requireSigs: false });
          expect(r.copied.map((p) => p.name)).toEqual(['simple', 'dependent']);
          expect(await local.isValidPath(DEP)).toBe(true);
          const m = server.metrics.render();
          expect(m).toContain('strata_serve_requests_total{route="closure",status="200"} 1');
          expect(m).toContain('strata_serve_requests_total{route="nars",status="200"} 1');
          expect(m).not.toContain('route="nar"');
          // The answer is the NARs back to back (compressed as one stream unless `none`).
          const names = (await servedNames(server)).map((n) => n.name.slice(0, 85)).join(','); // <hash part>-<NAR hash>
          const res = await server.handle({ method: 'GET', url: `/nars${ext}/${names}` });
          expect(res.status).toBe(200);
          let plain = await bytesOf(res.body);
          if (compression !== 'none') {
            const { decompressor } = await import('../../src/compression/index.js');
            plain = Buffer.concat(await Readable.from([plain]).pipe(decompressor(compression)).toArray());
          }
          expect(plain.length).toBe((await servedNames(server)).reduce((n, s) => n + s.narSize, 0));
        });
      } finally {
        await l.close();
        await src.close();
      }
    });
  }

  it('a longer closure: a first request of 8 NARs (restoring starts sooner), then the rest in one', async () => {
    const work = tempDir();
    const src = (await openStore(join(work, 'src'))) as LocalStore;
    let top: PathInfo | undefined;
    for (let i = 0; i < 20; i++) top = await src.addText(`link-${i}`, `link ${i} ${top ? dir.print(top.path) : ''}\n`.repeat(50), top ? [top.path] : []);
    const server = new CacheServer(src, { compression: 'none' });
    const l = await listen(server, { host: '127.0.0.1', port: 0 });
    try {
      await withCopyStores(work, l.url, async (cache, local) => {
        const r = await copyPaths(cache, local, [top!.path], { recursive: true, requireSigs: false });
        expect(r.copied).toHaveLength(20);
        for (const p of r.copied) expect((await local.queryPathInfo(p))?.narHash.equals((await src.queryPathInfo(p))!.narHash)).toBe(true);
        expect(server.metrics.render()).toContain('strata_serve_requests_total{route="nars",status="200"} 2\n');
      });
    } finally {
      await l.close();
      await src.close();
    }
  });

  const cases: Array<{ name: string; tamper: (res: ServeResponse, body: Buffer, http: ServerResponse) => boolean; code?: string; message?: RegExp; compression?: 'zstd' }> = [
    {
      name: 'a byte changed in the answer',
      tamper: (res, body, http) => {
        body[body.length - 30]! ^= 1;
        http.writeHead(res.status, res.headers).end(body);
        return true;
      },
      code: 'HASH_MISMATCH',
      message: /^Cannot read '\/nix\/store\/\w{32}-dependent' from 'http:\/\/127\.0\.0\.1:\d+': NarHash mismatch, got \w{52}$/,
    },
    {
      name: 'an answer shorter than the NARs it names',
      tamper: (res, body, http) => {
        http.writeHead(res.status, { ...res.headers, 'content-length': String(body.length - 7) }).end(body.subarray(0, body.length - 7));
        return true;
      },
      code: 'SIZE_MISMATCH',
      message: /^Cannot read '\/nix\/store\/\w{32}-dependent' from 'http:\/\/127\.0\.0\.1:\d+': NarSize mismatch, got \d+ bytes$/,
    },
    {
      name: 'a byte changed in a zstd answer (nars.zst/)',
      compression: 'zstd',
      tamper: (res, body, http) => {
        body[body.length >> 1]! ^= 0x55;
        http.writeHead(res.status, res.headers).end(body);
        return true;
      },
    },
    {
      name: 'a connection cut inside the answer',
      tamper: (res, body, http) => {
        http.writeHead(res.status, res.headers);
        http.write(body.subarray(0, 10), () => http.destroy());
        return true;
      },
    },
  ];
  for (const c of cases) {
    it(`refuses ${c.name}: nothing becomes valid`, async () => {
      const work = tempDir();
      const src = await filledStore(work);
      const t = await tamperingServer(new CacheServer(src, { compression: c.compression ?? 'none' }), c.tamper);
      try {
        await withCopyStores(work, t.url, async (cache, local) => {
          const e = await copyPaths(cache, local, [DEP], { recursive: true, requireSigs: false }).then(
            () => undefined,
            (x: unknown) => x,
          );
          expect(isStrataError(e), String(e)).toBe(true);
          if (c.code) expect((e as { code: string }).code).toBe(c.code);
          if (c.message) expect((e as Error).message).toMatch(c.message);
          expect((e as Error).message).not.toContain('\n');
          expect(t.nars()).toBe(1);
          expect(t.nar(), 'a failed nars/ answer is not read again NAR by NAR').toBe(0);
          expect(await local.queryValidPaths(await src.queryAllValidPaths())).toEqual([]);
        });
      } finally {
        await t.close();
        await src.close();
      }
    });
  }

  it('reads the NARs one by one when the server refuses nars/ (a path changed since its narinfo)', async () => {
    const work = tempDir();
    const src = await filledStore(work);
    const server = new CacheServer(src, { compression: 'none' });
    const t = await tamperingServer(server, (_res, _body, http) => (http.writeHead(404).end(), true));
    try {
      await withCopyStores(work, t.url, async (cache, local) => {
        const r = await copyPaths(cache, local, [DEP], { recursive: true, requireSigs: false });
        expect(r.copied.map((p) => p.name)).toEqual(['simple', 'dependent']);
        expect(t.nars()).toBe(1);
        expect(t.nar()).toBe(2);
      });
    } finally {
      await t.close();
      await src.close();
    }
  });
});

describe('a closure walked narinfo by narinfo (a static cache)', () => {
  /** A static HTTP cache of the vectors (compression none), recording the request targets. */
  async function staticCache(work: string): Promise<{ url: string; seen: string[]; close: () => Promise<void> }> {
    const root = join(work, 'static');
    writeVectorCache(root, 'none');
    const seen: string[] = [];
    const srv = createServer((req, res) => {
      const url = req.url ?? '/';
      seen.push(url);
      let body: Buffer | undefined;
      try {
        body = readFileSync(join(root, url.slice(1)));
      } catch {
        res.writeHead(404).end();
        return;
      }
      // A narinfo takes 50 ms (a distant cache), so what the client does meanwhile shows.
      setTimeout(
        () => {
          seen.push(`answered ${url}`);
          res.writeHead(200, { 'content-length': String(body.length) }).end(body);
        },
        url.endsWith('.narinfo') ? 50 : 0,
      );
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    return {
      url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
      seen,
      close: () =>
        new Promise<void>((r) => {
          srv.closeAllConnections();
          srv.close(() => r());
        }),
    };
  }

  it('downloads the NARs the destination lacks while the walk goes on, each once', async () => {
    const work = tempDir();
    const c = await staticCache(work);
    try {
      await withCopyStores(work, `${c.url}?ttl-positive=0&ttl-negative=0`, async (cache, local) => {
        const r = await copyPaths(cache, local, [DEP], { recursive: true, requireSigs: false });
        expect(r.copied.map((p) => p.name)).toEqual(['simple', 'dependent']);
        const nars = c.seen.filter((u) => u.startsWith('/nar/'));
        expect(nars).toHaveLength(2);
        // dependent's NAR is asked for before the narinfo of its reference, the walk's next level, is in.
        const lastNarInfo = c.seen.findLastIndex((u) => u.startsWith('answered') && u.endsWith('.narinfo'));
        expect(c.seen.findIndex((u) => u.startsWith('/nar/'))).toBeLessThan(lastNarInfo);
      });
    } finally {
      await c.close();
    }
  });

  it('substitutePaths: a NAR failed only because an earlier one of the same nars/ answer was bad is read again from its substituter, the bad one from the next', async () => {
    const work = tempDir();
    const store = (await filledStore(work)) as LocalStore;
    // The simple path's file changed behind the server's store (same size, other bytes).
    const file = store.realPath(dir.parse(SIMPLE_PATH));
    const bytes = readFileSync(file);
    bytes[0] = bytes[0]! ^ 1;
    writeFileSync(file, bytes);
    const l = await listen(new CacheServer(store, { compression: 'none' }), { host: '127.0.0.1', port: 0 });
    // The next substituter (Priority 60, after the server's 30) has the simple path only.
    const other = join(work, 'other');
    writeVectorCache(other, 'xz');
    rmSync(join(other, `${DEP.hashPart}.narinfo`));
    appendFileSync(join(other, 'nix-cache-info'), 'Priority: 60\n');
    try {
      await withCopyStores(work, `${l.url}?ttl-positive=0&ttl-negative=0`, async (cache, local) => {
        const second = await openStore(`file://${other}`);
        try {
          const r = await substitutePaths(local, [cache, second], [DEP], { requireSigs: false });
          expect(r.substituted.map((p) => p.name)).toEqual(['simple', 'dependent']);
          expect((await local.queryPathInfo(dir.parse(SIMPLE_PATH)))?.narHash.toString()).toBe(parseNarInfo(readFileSync(join(other, `${dir.parse(SIMPLE_PATH).hashPart}.narinfo`), 'utf8')).narHash.toString());
        } finally {
          await second.close();
        }
      });
    } finally {
      await l.close();
      await store.close();
    }
  });

  it('substitutePaths too: NARs are asked for while the walk goes on', async () => {
    const work = tempDir();
    const c = await staticCache(work);
    try {
      await withCopyStores(work, `${c.url}?ttl-positive=0&ttl-negative=0`, async (cache, local) => {
        const r = await substitutePaths(local, [cache], [DEP], { requireSigs: false });
        expect(r.substituted.map((p) => p.name)).toEqual(['simple', 'dependent']);
        expect(c.seen.filter((u) => u.startsWith('/nar/'))).toHaveLength(2);
        const lastNarInfo = c.seen.findLastIndex((u) => u.startsWith('answered') && u.endsWith('.narinfo'));
        expect(c.seen.findIndex((u) => u.startsWith('/nar/'))).toBeLessThan(lastNarInfo);
      });
    } finally {
      await c.close();
    }
  });

  it('does not download ahead what the destination has', async () => {
    const work = tempDir();
    const c = await staticCache(work);
    try {
      await withCopyStores(work, `${c.url}?ttl-positive=0&ttl-negative=0`, async (cache, local) => {
        const simple = (await cache.queryPathInfo(DEP))!.references.find((p) => p.name === 'simple')!;
        await copyPaths(cache, local, [simple], { requireSigs: false });
        c.seen.length = 0;
        const r = await copyPaths(cache, local, [DEP], { recursive: true, requireSigs: false });
        expect(r.copied.map((p) => p.name)).toEqual(['dependent']);
        expect(c.seen.filter((u) => u.startsWith('/nar/'))).toHaveLength(1);
      });
    } finally {
      await c.close();
    }
  });
});
