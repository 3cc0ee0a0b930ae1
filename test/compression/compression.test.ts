import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { Readable, type Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { beforeAll, describe, expect, it } from 'vitest';

import { compressor, decompressor, isCompressionMethod } from '../../src/compression/index.js';
import { isStrataError } from '../../src/core/error.js';
import { parseNarInfo } from '../../src/core/narinfo.js';
import { loadVector } from '../support/vectors.js';

const vectors = loadVector('binary-cache.json');

/** Runs `input` (chunked) through `transforms`; resolves with the output bytes. */
async function run(
  input: Buffer | Iterable<Buffer> | AsyncIterable<Buffer>,
  ...transforms: Transform[]
): Promise<Buffer> {
  const out: Buffer[] = [];
  const source = Buffer.isBuffer(input) ? Readable.from([input]) : Readable.from(input);
  await pipeline([
    source,
    ...transforms,
    new Writable({
      write(chunk: Buffer, _e, cb) {
        out.push(chunk);
        cb();
      },
    }),
  ]);
  return Buffer.concat(out);
}

/** The StrataError code a promise rejects with (fails the test if it resolves or hangs past 10 s). */
async function failureCode(p: Promise<unknown>): Promise<string> {
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error('hung for 10 s')), 10_000).unref(),
  );
  try {
    await Promise.race([p, timeout]);
  } catch (e) {
    expect(isStrataError(e), String(e)).toBe(true);
    const msg = (e as Error).message;
    expect(msg).not.toContain('\n');
    expect(msg).toMatch(/^Cannot /);
    return (e as { code: string }).code;
  }
  throw new Error('expected a failure, got success');
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Pipes `input` through a CLI and returns its stdout. */
function cli(cmd: string, args: string[], input: Buffer): Buffer {
  return execFileSync(cmd, args, { input, maxBuffer: 256 * 1024 * 1024 });
}

describe('NAR files of real Nix 2.8 caches (binary-cache.json)', () => {
  const methods = Object.keys(vectors.caches);
  it('covers none, xz, zstd and bzip2', () =>
    expect(methods.sort()).toEqual(['bzip2', 'none', 'xz', 'zstd']));
  for (const method of methods) {
    const cache = vectors.caches[method];
    it(`${method}: has narinfos`, () => expect(cache.narinfos.length).toBeGreaterThan(0));
    for (const ni of cache.narinfos) {
      it(`${method}: ${ni.file} decompresses to the NAR of its NarHash`, async () => {
        const info = parseNarInfo(ni.text);
        expect(info.compression).toBe(method);
        expect(ni.nar_file).toBe(info.url);
        const file = Buffer.from(ni.nar_file_b64, 'base64');
        expect(file.length).toBe(info.fileSize);
        expect(sha256(file)).toBe(info.fileHash!.toBase16());
        // One byte at a time too: the adapters must not depend on chunk boundaries.
        for (const input of [file, [...file].map((b) => Buffer.from([b]))]) {
          const nar = await run(input, decompressor(info.compression));
          expect(nar.length).toBe(info.narSize);
          expect(sha256(nar)).toBe(info.narHash.toBase16());
          expect(nar.subarray(8, 21).toString()).toBe('nix-archive-1');
        }
      });
    }
  }
});

const WRITABLE = ['none', 'xz', 'zstd', 'br'] as const;
const READ_ONLY_CLI: Record<string, string[] | undefined> = {
  xz: ['xz', '-dc'],
  zstd: ['zstd', '-dcq'],
  bzip2: ['bzip2', '-dc'],
};

describe('round trips', () => {
  const inputs: Array<[string, Buffer]> = [
    ['1 byte', Buffer.from([7])],
    ['random 300 kB', randomBytes(300_000)],
    ['text 1 MB', Buffer.from('nix-archive-1 '.repeat(75_000))],
  ];
  for (const method of WRITABLE) {
    for (const [name, data] of inputs) {
      it(`${method}: ${name}`, async () => {
        const packed = await run(
          data,
          compressor(method, { level: method === 'xz' ? 1 : method === 'br' ? 5 : undefined }),
        );
        if (method === 'none') expect(packed.equals(data)).toBe(true);
        const back = await run(packed, decompressor(method));
        expect(back.equals(data)).toBe(true);
      });
    }
  }

  for (const method of ['xz', 'zstd', 'br'] as const) {
    it(`${method}: 20 MB streams through in 64 KiB chunks with flat buffers`, async () => {
      const total = 20 * 1024 * 1024;
      const chunk = 64 * 1024;
      const source = createHash('sha256');
      async function* generate(): AsyncGenerator<Buffer> {
        // Half random, half repetitive, so both the literal and the match paths run.
        for (let at = 0; at < total; at += chunk) {
          const c = (at / chunk) % 2 === 0 ? randomBytes(chunk) : Buffer.alloc(chunk, at & 0xff);
          source.update(c);
          yield c;
        }
      }
      const c = compressor(method, { level: method === 'xz' ? 0 : method === 'br' ? 4 : 3 });
      const d = decompressor(method);
      const result = createHash('sha256');
      let seen = 0;
      let maxBuffered = 0;
      await pipeline(
        Readable.from(generate()),
        c,
        d,
        new Writable({
          write(b: Buffer, _e, cb) {
            result.update(b);
            seen += b.length;
            maxBuffered = Math.max(
              maxBuffered,
              c.readableLength + c.writableLength + d.readableLength + d.writableLength,
            );
            cb();
          },
        }),
      );
      expect(seen).toBe(total);
      expect(result.digest('hex')).toBe(source.digest('hex'));
      // Streams hold at most a few chunks, never a sizeable part of the 20 MB.
      expect(maxBuffered).toBeLessThan(2 * 1024 * 1024);
    });
  }

  it('zstd: a 512 MiB bomb of zeros decompresses with flat memory', async () => {
    const zero = Buffer.alloc(1024 * 1024);
    const bomb = await run(
      (function* () {
        for (let i = 0; i < 512; i++) yield zero;
      })(),
      compressor('zstd', { level: 19 }),
    );
    expect(bomb.length).toBeLessThan(100_000);
    const d = decompressor('zstd');
    let seen = 0;
    let maxBuffered = 0;
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    await pipeline(
      Readable.from([bomb]),
      d,
      new Writable({
        write(b: Buffer, _e, cb) {
          seen += b.length;
          maxBuffered = Math.max(maxBuffered, d.readableLength);
          if ((seen & 0xffffff) === 0) rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
          cb();
        },
      }),
    );
    expect(seen).toBe(512 * 1024 * 1024);
    // One 128 KiB libzstd output buffer plus the 16 KiB high-water mark.
    expect(maxBuffered).toBeLessThanOrEqual(256 * 1024);
    expect(rssPeak - rssBefore).toBeLessThan(256 * 1024 * 1024);
  });

  it('xz: a 64 MiB bomb of zeros decompresses in bounded bursts', async () => {
    const bomb = cli('sh', ['-c', 'head -c 64M /dev/zero | xz -6 -T1'], Buffer.alloc(0));
    expect(bomb.length).toBeLessThan(64 * 1024);
    const d = decompressor('xz');
    let seen = 0;
    let maxBuffered = 0;
    await pipeline(
      Readable.from([bomb]),
      d,
      new Writable({
        write(b: Buffer, _e, cb) {
          seen += b.length;
          maxBuffered = Math.max(maxBuffered, d.readableLength);
          setImmediate(cb); // a slow consumer
        },
      }),
    );
    expect(seen).toBe(64 * 1024 * 1024);
    // 4 KiB input slices × xz's ~6,800:1 worst case.
    expect(maxBuffered).toBeLessThan(32 * 1024 * 1024);
  });
});

describe('interop with the xz, zstd and bzip2 command-line tools', () => {
  const data = Buffer.concat([randomBytes(200_000), Buffer.from('strata '.repeat(50_000))]);
  for (const method of ['xz', 'zstd', 'bzip2'] as const) {
    it(`${method}: strata reads what the CLI writes (also concatenated streams)`, async () => {
      const packed = cli(method, method === 'zstd' ? ['-cq'] : ['-c'], data);
      expect((await run(packed, decompressor(method))).equals(data)).toBe(true);
      const twice = await run(Buffer.concat([packed, packed]), decompressor(method));
      expect(twice.equals(Buffer.concat([data, data]))).toBe(true);
    });
  }
  for (const method of ['xz', 'zstd'] as const) {
    it(`${method}: the CLI reads what strata writes`, async () => {
      const packed = await run(data, compressor(method, { level: method === 'xz' ? 1 : 3 }));
      expect(
        cli(READ_ONLY_CLI[method]![0]!, READ_ONLY_CLI[method]!.slice(1), packed).equals(data),
      ).toBe(true);
    });
  }
  it('xz: strata reads a multi-threaded, multi-block xz file (xz -T2 --block-size)', async () => {
    const big = Buffer.concat([data, data, data]);
    const packed = cli('xz', ['-c', '-T2', '--block-size=100000'], big);
    expect((await run(packed, decompressor('xz'))).equals(big)).toBe(true);
  });
});

describe('bad input gives COMPRESSION_INVALID, never a crash or a hang', () => {
  const data = Buffer.from('the quick brown fox '.repeat(5000));
  const packed: Record<string, Buffer> = {
    xz: cli('xz', ['-c'], data),
    zstd: cli('zstd', ['-cq'], data),
    bzip2: cli('bzip2', ['-c'], data),
  };
  beforeAll(async () => {
    packed['br'] = await run(data, compressor('br', { level: 5 }));
  });
  const garbage = Buffer.from('this is not compressed at all; '.repeat(40));

  for (const method of ['xz', 'zstd', 'bzip2', 'br']) {
    const good = (): Buffer => packed[method]!;
    const cases: Array<[string, () => Buffer]> = [
      ['garbage', () => garbage],
      ['empty input', () => Buffer.alloc(0)],
      ['only the first 6 bytes', () => good().subarray(0, 6)],
      ['truncated by half', () => good().subarray(0, good().length >> 1)],
      ['missing the last byte', () => good().subarray(0, good().length - 1)],
      ['followed by junk', () => Buffer.concat([good(), garbage])],
      [
        'corrupted in the middle',
        () => {
          const b = Buffer.from(good());
          for (let i = b.length >> 2; i < (b.length >> 2) + 16; i++) b[i] = b[i]! ^ 0x5a;
          return b;
        },
      ],
    ];
    for (const [name, input] of cases) {
      it(`${method}: ${name}`, async () => {
        expect(await failureCode(run(input(), decompressor(method)))).toBe('COMPRESSION_INVALID');
      });
    }
    it(`${method}: 200 random single-byte corruptions never crash or hang`, async () => {
      const outcomes = new Set<string>();
      for (let i = 0; i < 200; i++) {
        const b = Buffer.from(good());
        const at = Math.floor(Math.random() * b.length);
        b[at] = b[at]! ^ (1 + Math.floor(Math.random() * 255));
        try {
          const out = await run(b, decompressor(method));
          // Without a checksum a flip can go unnoticed; then only the NAR hash check catches it.
          outcomes.add(out.equals(data) ? 'same' : 'different');
        } catch (e) {
          expect(isStrataError(e, 'COMPRESSION_INVALID'), String(e)).toBe(true);
          outcomes.add('rejected');
        }
      }
      expect(outcomes.has('rejected')).toBe(true);
    });
  }

  it('unknown methods are rejected by the decompressor and compressor; bzip2 is read-only', () => {
    for (const m of ['lz4', 'lzip', 'gzip', '']) {
      expect(isCompressionMethod(m)).toBe(false);
      expect(() => decompressor(m)).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
      expect(() => compressor(m)).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    }
    expect(() => compressor('bzip2')).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    expect(() => compressor('zstd', { level: 40 })).toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED' }),
    );
  });

  it('a narinfo with an unknown compression parses, and its NAR cannot be decompressed', () => {
    const ni = vectors.caches.xz.narinfos[0];
    const info = parseNarInfo(ni.text.replace('Compression: xz', 'Compression: lz5'));
    expect(info.compression).toBe('lz5');
    expect(() => decompressor(info.compression)).toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED' }),
    );
  });
});

describe('more CLI checks', () => {
  it('xz -t accepts strata xz at the default preset 6', async () => {
    const data = Buffer.from('hello '.repeat(1000));
    const packed = await run(data, compressor('xz'));
    expect(execFileSync('xz', ['-t'], { input: packed }).length).toBe(0);
    expect(cli('xz', ['-dc'], packed).equals(data)).toBe(true);
  });

  it('zstd: a streamed CLI pipe works chunk by chunk', async () => {
    const child = spawn('zstd', ['-cq'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const data = randomBytes(500_000);
    child.stdin.end(data);
    const out = await run(child.stdout as unknown as AsyncIterable<Buffer>, decompressor('zstd'));
    expect(out.equals(data)).toBe(true);
  });
});
