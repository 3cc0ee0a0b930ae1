/**
 * The upload path of binary caches: the spool a NAR file waits in (memory when small, a staging
 * file when large), and compression=none writes (one hash, the NAR file's existence asked while
 * the NAR still streams, nothing published when the NAR is not the declared one).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { describe, expect, it } from 'vitest';

import { Hash } from '../../src/core/hash.js';
import { narInfoToPathInfo, parseNarInfo } from '../../src/core/narinfo.js';
import { BinaryCacheStore } from '../../src/store/binary-cache/binary-cache-store.js';
import { FileTransport } from '../../src/store/binary-cache/file-transport.js';
import { Spool } from '../../src/store/binary-cache/spool.js';
import type { CacheTransport } from '../../src/store/binary-cache/transport.js';
import { tempDir } from '../support/tmp.js';
import { narinfosOf, narOf } from './_cache.js';

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
