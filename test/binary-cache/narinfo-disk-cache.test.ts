/**
 * The narinfo disk cache writes in batches: answers are kept in memory and written 256 rows per
 * transaction, after a second, or at close; this process sees them at once, others once written.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

import { afterEach, describe, expect, it, vi } from 'vitest';

import type { BinaryCacheStore } from '../../src/store/binary-cache/binary-cache-store.js';
import { NarInfoDiskCache } from '../../src/store/binary-cache/narinfo-disk-cache.js';
import { openStore } from '../../src/store/open.js';
import { tempDir } from '../support/tmp.js';

const CACHE = 'http://cache.example';
const hashPart = (i: number) => i.toString(36).padStart(32, '0');
const DAY = 24 * 3600;

afterEach(() => {
  vi.useRealTimers();
});

describe('NarInfoDiskCache', () => {
  it('writes remembered answers 256 to a transaction and the rest at close; this process sees them at once', async () => {
    const dir = tempDir();
    const writer = (await NarInfoDiskCache.open(dir))!;
    const reader = (await NarInfoDiskCache.open(dir))!;
    try {
      for (let i = 0; i < 300; i++) writer.remember(CACHE, hashPart(i), i % 2 === 0 ? `StorePath: ${i}\n` : null);
      expect(writer.lookup(CACHE, hashPart(299), DAY, DAY)).toBeNull();
      expect(writer.lookup(CACHE, hashPart(298), DAY, DAY)).toEqual({ text: 'StorePath: 298\n' });
      // Another process: the first 256 were written together, the last 44 not yet.
      expect(reader.lookup(CACHE, hashPart(255), DAY, DAY)).toBeNull();
      expect(reader.lookup(CACHE, hashPart(254), DAY, DAY)).toEqual({ text: 'StorePath: 254\n' });
      expect(reader.lookup(CACHE, hashPart(256), DAY, DAY)).toBeUndefined();
      writer.close();
      expect(reader.lookup(CACHE, hashPart(298), DAY, DAY)).toEqual({ text: 'StorePath: 298\n' });
      expect(reader.lookup(CACHE, hashPart(299), DAY, DAY)).toBeNull();
      // With both TTLs 0 nothing remembered can answer.
      expect(reader.lookup(CACHE, hashPart(298), 0, 0)).toBeUndefined();
    } finally {
      reader.close();
    }
  });

  it('writes what a long-lived process remembered after a second', async () => {
    const dir = tempDir();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const writer = (await NarInfoDiskCache.open(dir))!;
    const reader = (await NarInfoDiskCache.open(dir))!;
    try {
      writer.remember(CACHE, hashPart(1), 'StorePath: 1\n');
      expect(reader.lookup(CACHE, hashPart(1), DAY, DAY)).toBeUndefined();
      vi.advanceTimersByTime(1000);
      expect(reader.lookup(CACHE, hashPart(1), DAY, DAY)).toEqual({ text: 'StorePath: 1\n' });
    } finally {
      writer.close();
      reader.close();
    }
  });

  it("asks for nix-cache-info while a new disk cache is made, and not at all once the disk cache holds it", async () => {
    let asked = 0;
    const server = createServer((req, res) => {
      if (req.url === '/nix-cache-info') {
        asked++;
        res.writeHead(200, { 'content-type': 'text/x-nix-cache-info' }).end('StoreDir: /nix/store\nPriority: 7\n');
      } else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const saved = process.env['XDG_CACHE_HOME'];
    process.env['XDG_CACHE_HOME'] = tempDir();
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      expect(NarInfoDiskCache.exists()).toBe(false);
      for (const expected of [1, 1]) {
        const cache = (await openStore(url)) as BinaryCacheStore;
        try {
          expect(cache.priority).toBe(7);
          expect(asked).toBe(expected);
        } finally {
          await cache.close();
        }
      }
      expect(NarInfoDiskCache.exists()).toBe(true);
    } finally {
      if (saved === undefined) delete process.env['XDG_CACHE_HOME'];
      else process.env['XDG_CACHE_HOME'] = saved;
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
