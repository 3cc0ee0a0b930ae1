/**
 * The upload path of binary caches: the spool a NAR file waits in (memory when small, a staging
 * file when large), and compression=none writes (one hash, the NAR file's existence asked while
 * the NAR still streams, nothing published when the NAR is not the declared one).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { describe, expect, it } from 'vitest';

import { Hash } from '../../src/core/hash.js';
import { narInfoToPathInfo, parseNarInfo } from '../../src/core/narinfo.js';
import { BinaryCacheStore } from '../../src/store/binary-cache/binary-cache-store.js';
import { copyPaths } from '../../src/store/copy.js';
import { FileTransport } from '../../src/store/binary-cache/file-transport.js';
import { Spool } from '../../src/store/binary-cache/spool.js';
import type { CacheTransport } from '../../src/store/binary-cache/transport.js';
import type { StorePath } from '../../src/core/store-path.js';
import type { PathInfo } from '../../src/store/store.js';
import { tempDir } from '../support/tmp.js';
import { narinfosOf, narOf } from './_cache.js';

/**
 * A file cache that can also list (as S3 does), its top level optionally `pageKeys` keys per
 * page, refusing to list `refuse`; every narinfo lookup, existence check and listing is recorded.
 */
function listingTransport(dir: string, pageKeys = Infinity, refuse?: string) {
  const inner = new FileTransport(dir);
  const calls: string[] = [];
  const transport: CacheTransport = {
    uri: inner.uri,
    getFile: (k) => {
      if (k.endsWith('.narinfo')) calls.push(`get ${k}`);
      return inner.getFile(k);
    },
    getStream: (k) => inner.getStream(k),
    exists: async (k) => {
      calls.push(`exists ${k}`);
      return inner.exists(k);
    },
    putFile: (k, b, c) => inner.putFile(k, b, c),
    putLocalFile: (k, f, c) => inner.putLocalFile(k, f, c),
    stagingDir: () => inner.stagingDir(),
    list: (x) => inner.list(x),
    listSome: async (prefix, maxPages) => {
      calls.push(`list '${prefix}' ${maxPages}`);
      if (prefix === refuse) throw new Error('AccessDenied');
      const all = existsSync(join(dir, prefix)) ? readdirSync(join(dir, prefix)).filter((f) => !f.startsWith('.') && f !== 'nar').map((f) => `${prefix}${f}`).sort() : [];
      const room = prefix === '' ? pageKeys * maxPages : Infinity;
      return all.length <= room ? { keys: all } : { keys: all.slice(0, room), through: all[room - 1] };
    },
    close: () => inner.close(),
  };
  return { transport, calls };
}

/** A transport that records what it is asked to store, and keeps the bytes. */
function recordingTransport(staging: string) {
  const puts: { key: string; how: 'file' | 'stream'; bytes: Buffer }[] = [];
  const t: Pick<CacheTransport, 'putFile' | 'putLocalFile'> = {
    async putFile(key, body) {
      const chunks: Buffer[] = [];
      for await (const c of Buffer.isBuffer(body) ? Readable.from([body]) : body()) chunks.push(c as Buffer);
      puts.push({ key, how: 'stream', bytes: Buffer.concat(chunks) });
    },
    async putLocalFile(key, localPath) {
      expect(localPath.startsWith(staging)).toBe(true);
      puts.push({ key, how: 'file', bytes: readFileSync(localPath) });
      rmSync(localPath);
    },
  };
  return { transport: t as CacheTransport, puts };
}

describe('Spool', () => {
  it('keeps a file up to its limit in memory (nothing staged), and every attempt reads it whole', async () => {
    const dir = tempDir();
    const data = randomBytes(3000);
    const spool = new Spool(dir, 4096);
    await pipeline(Readable.from([data.subarray(0, 1000), data.subarray(1000)]), spool);
    expect(spool.onDisk).toBe(false);
    expect(spool.size).toBe(3000);
    expect(readdirSync(dir)).toEqual([]);
    // A retried upload calls the body factory again: each read sees all the bytes.
    const seen: Buffer[] = [];
    const t = {
      async putFile(_k: string, body: Buffer | (() => Readable), _c: string, size?: number) {
        expect(size).toBe(3000);
        for (let attempt = 0; attempt < 2; attempt++) {
          const chunks: Buffer[] = [];
          for await (const c of (body as () => Readable)()) chunks.push(c as Buffer);
          seen.push(Buffer.concat(chunks));
        }
      },
    } as unknown as CacheTransport;
    await spool.upload(t, 'nar/x.nar', 'application/x-nix-nar');
    expect(seen.map((b) => b.equals(data))).toEqual([true, true]);
    await spool.dispose();
  });

  it('spills to a staging file past its limit, hands that file to the transport, and leaves nothing behind', async () => {
    const dir = tempDir();
    const data = randomBytes(10_000);
    const spool = new Spool(dir, 4096);
    await pipeline(Readable.from([data.subarray(0, 3000), data.subarray(3000, 5000), data.subarray(5000)]), spool);
    expect(spool.onDisk).toBe(true);
    expect(spool.size).toBe(10_000);
    expect(readdirSync(dir)).toHaveLength(1);
    const { transport, puts } = recordingTransport(dir);
    await spool.upload(transport, 'nar/y.nar', 'application/x-nix-nar');
    await spool.dispose();
    expect(puts).toHaveLength(1);
    expect(puts[0]!.how).toBe('file');
    expect(puts[0]!.bytes.equals(data)).toBe(true);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a staging file that cannot be written fails the write (no uncaught error event)', async () => {
    const spool = new Spool(join(tempDir(), 'missing'), 16);
    await expect(pipeline(Readable.from([randomBytes(100)]), spool)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a spool dropped before its upload (a failed write) removes its staging file', async () => {
    const dir = tempDir();
    const spool = new Spool(dir, 16);
    await pipeline(Readable.from([randomBytes(100)]), spool);
    expect(readdirSync(dir)).toHaveLength(1);
    await spool.dispose();
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('compression=none uploads', () => {
  const ni = narinfosOf('none').map((n) => narInfoToPathInfo(parseNarInfo(n.text))).find((i) => i.references.length === 0)!;
  const nar = narOf(ni.path);

  it('ask whether the NAR file exists while the NAR is still streaming, under the key its NarHash gives', async () => {
    const dir = tempDir();
    const inner = new FileTransport(dir);
    const events: string[] = [];
    const transport: CacheTransport = {
      uri: inner.uri,
      getFile: (k) => inner.getFile(k),
      getStream: (k) => inner.getStream(k),
      exists: async (k) => {
        events.push(`exists ${k}`);
        return inner.exists(k);
      },
      putFile: (k, b, c) => inner.putFile(k, b, c),
      putLocalFile: (k, f, c) => inner.putLocalFile(k, f, c),
      stagingDir: () => inner.stagingDir(),
      list: (x) => inner.list(x),
      close: () => inner.close(),
    };
    const cache = await BinaryCacheStore.open(`file://${dir}`, transport, { compression: 'none' });
    const body = new PassThrough();
    const added = cache.addFromNar({ ...ni, sigs: [] }, body);
    body.write(nar.subarray(0, 8));
    // The first bytes are in, the NAR has not ended: the check must already be under way.
    for (let i = 0; i < 50 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    events.push('nar end');
    body.end(nar.subarray(8));
    await added;
    await cache.close();
    expect(events).toEqual([`exists nar/${ni.narHash.toNix32()}.nar`, 'nar end']);
    const written = parseNarInfo(readFileSync(join(dir, `${ni.path.hashPart}.narinfo`), 'utf8'));
    expect(written.fileHash?.equals(ni.narHash)).toBe(true);
    expect(written.fileSize).toBe(ni.narSize);
  });

  it('publish nothing (no NAR file, no narinfo, no staging leftovers) when the NAR is not the declared one', async () => {
    const dir = tempDir();
    const cache = await BinaryCacheStore.open(`file://${dir}`, new FileTransport(dir), { compression: 'none' });
    const tampered = Buffer.from(nar);
    const at = tampered.length - 20;
    tampered[at] = tampered[at]! ^ 1;
    await expect(cache.addFromNar({ ...ni, sigs: [] }, Readable.from([tampered]))).rejects.toMatchObject({ code: 'HASH_MISMATCH' });
    await expect(cache.addFromNar({ ...ni, sigs: [], narHash: Hash.of('sha256', 'other') }, Readable.from([nar]))).rejects.toMatchObject({ code: 'HASH_MISMATCH' });
    await cache.close();
    expect(existsSync(join(dir, `${ni.path.hashPart}.narinfo`))).toBe(false);
    expect(readdirSync(join(dir, 'nar'))).toEqual([]);
  });
});

describe('pushing many paths to a cache that can list (S3)', () => {
  /** A source cache of 12 unrelated text paths, and the NAR key of each. */
  async function source() {
    const dir = tempDir();
    const src = await BinaryCacheStore.open(`file://${dir}`, new FileTransport(dir), { compression: 'none' });
    const infos: PathInfo[] = [];
    for (let i = 0; i < 12; i++) infos.push(await src.addText(`listed-${i}`, `contents ${i}\n`, []));
    return { src, paths: infos.map((i) => i.path), narKey: (i: number) => `nar/${infos[i]!.narHash.toNix32()}.nar` };
  }

  it('asks with one listing of narinfos and one of NAR files, and writes a NAR file the listing showed only once', async () => {
    const { src, paths, narKey } = await source();
    const dir = tempDir();
    // A NAR file already there without its narinfo (another writer's, mid-push): not written again.
    mkdirSync(join(dir, 'nar'), { recursive: true });
    writeFileSync(join(dir, narKey(0)), 'not rewritten');
    const { transport, calls } = listingTransport(dir);
    const dst = await BinaryCacheStore.open(`file://${dir}`, transport, { compression: 'none' });
    const r = await copyPaths(src, dst, paths);
    expect(r.copied).toHaveLength(12);
    expect(calls).toEqual([`list '' 1`, `list 'nar/' 1`]);
    expect(readFileSync(join(dir, narKey(0)), 'utf8')).toBe('not rewritten');
    expect(readFileSync(join(dir, narKey(1))).length).toBeGreaterThan(0);
    await dst.close();

    // Again, with everything there: one listing answers, nothing is fetched or written.
    const again = listingTransport(dir);
    const dst2 = await BinaryCacheStore.open(`file://${dir}`, again.transport, { compression: 'none' });
    expect((await copyPaths(src, dst2, paths)).present).toHaveLength(12);
    expect(again.calls).toEqual([`list '' 1`]);
    await dst2.close();
    await src.close();
  });

  it('past where a listing stopped, falls back to a narinfo lookup and a HEAD per path', async () => {
    const { src, paths } = await source();
    const dir = tempDir();
    // Two keys per page: the narinfo listing sees two of nix-cache-info and the two narinfos.
    await copyPaths(src, await BinaryCacheStore.open(`file://${dir}`, new FileTransport(dir), { compression: 'none' }), paths.slice(0, 2));
    const { transport, calls } = listingTransport(dir, 2);
    const dst = await BinaryCacheStore.open(`file://${dir}`, transport, { compression: 'none' });
    const r = await copyPaths(src, dst, paths);
    await dst.close();
    await src.close();
    expect(r.copied).toHaveLength(10);
    expect(readdirSync(dir).filter((f) => f.endsWith('.narinfo'))).toHaveLength(12);
    // Every path past the listing's end was looked up; those before it were not.
    const through = ['nix-cache-info', ...paths.slice(0, 2).map((p) => `${p.hashPart}.narinfo`)].sort()[1]!;
    const key = (p: StorePath) => `${p.hashPart}.narinfo`;
    const reached = paths.slice(2).filter((p) => key(p) <= through);
    const notReached = paths.filter((p) => key(p) > through);
    expect(notReached.length).toBeGreaterThan(0);
    expect(calls.filter((c) => c.startsWith('get ')).sort()).toEqual(notReached.map((p) => `get ${key(p)}`).sort());
    // NAR files: one listing when the narinfo listing found at least 8 absent, else a HEAD each.
    const many = reached.length >= 8;
    expect(calls.filter((c) => c.startsWith('list '))).toEqual(many ? [`list '' 1`, `list 'nar/' 1`] : [`list '' 1`]);
    expect(calls.filter((c) => c.startsWith('exists '))).toHaveLength(many ? 0 : 10);
  });

  it('when listing is refused (no s3:ListBucket), falls back to a lookup and a HEAD per path', async () => {
    const { src, paths } = await source();
    for (const refused of ['', 'nar/']) {
      const dir = tempDir();
      const { transport, calls } = listingTransport(dir, Infinity, refused);
      const dst = await BinaryCacheStore.open(`file://${dir}`, transport, { compression: 'none' });
      expect((await copyPaths(src, dst, paths)).copied).toHaveLength(12);
      await dst.close();
      expect(calls.filter((c) => c.startsWith('list '))).toEqual(refused === '' ? [`list '' 1`] : [`list '' 1`, `list 'nar/' 1`]);
      expect(calls.filter((c) => c.startsWith('get '))).toHaveLength(refused === '' ? 12 : 0);
      expect(calls.filter((c) => c.startsWith('exists '))).toHaveLength(12);
    }
    await src.close();
  });
});
