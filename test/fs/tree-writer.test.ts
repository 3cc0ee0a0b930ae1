/**
 * The tree writer (src/fs/tree-writer.ts over native/tree_writer.c): restores that make their
 * nodes on the thread pool give the same trees, metadata and NARs as restores that make them
 * with calls on the main thread; failures surface at the next settle, as Node's fs errors, and
 * stop everything after them.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer as collect } from 'node:stream/consumers';

import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';

import { Hash } from '../../src/core/hash.js';
import type { NarEntry } from '../../src/core/nar/format.js';
import { encodeNar } from '../../src/core/nar/writer.js';
import { dumpPath } from '../../src/fs/nar-dump.js';
import { restoreNar, restoreNarSync } from '../../src/fs/nar-restore.js';
import { TreeWriter } from '../../src/fs/tree-writer.js';
import { releaseTaken } from '../../src/store/local/locks.js';
import { inPieces, narFile as file, narTreeArb } from '../support/nar-arbitrary.js';
import { tempDir } from '../support/tmp.js';

let tmp: string;
beforeEach(() => {
  tmp = tempDir('strata-tree-writer-');
});

async function writer(options?: { queuedLimit: number }): Promise<TreeWriter> {
  const w = await TreeWriter.open(options);
  if (!w) throw new Error('native/ is not built: run npm ci');
  return w;
}

/** Type, mode, mtime and contents or target of every node under `p`, by relative path (names as raw bytes, in hex where not ASCII). */
function snapshot(p: string | Buffer, rel = '.'): Array<[string, string]> {
  const st = lstatSync(p);
  const meta = `${(st.mode & 0o170777).toString(8)} ${st.mtimeMs}`;
  if (st.isSymbolicLink()) return [[rel, `${meta} -> ${readlinkSync(p, 'buffer').toString('hex')}`]];
  if (st.isFile()) return [[rel, `${meta} ${readFileSync(p).toString('hex')}`]];
  const dir = Buffer.from(p);
  const names = readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare);
  return [[rel, meta], ...names.flatMap((n) => snapshot(Buffer.concat([dir, Buffer.from('/'), n]), `${rel}/${/^[\x20-\x7e]*$/.test(n.toString('latin1')) ? n.toString('latin1') : n.toString('hex')}`))];
}

const openFds = (): number => readdirSync('/proc/self/fd').length;

const CANONICAL = { canonicalise: true, privateParent: true } as const;

describe('TreeWriter', () => {
  it('makes directories, files (a big one in pieces), and symlinks with store metadata, once settled', async () => {
    const w = await writer();
    const root = Buffer.from(join(tmp, 'out'));
    const at = (name: string): Buffer => Buffer.concat([root, Buffer.from(`/${name}`)]);
    w.mkdir(root);
    const big = Buffer.alloc(600 * 1024, 7); // more than one 256 KiB operation buffer
    const f = w.openFile(at('big'), 0o444);
    w.write(f, big, 0, 100);
    w.write(f, big, 100, big.length);
    w.closeFile(f);
    const x = w.openFile(at('run'), 0o555);
    w.closeFile(x);
    w.symlink(at('link'), Buffer.from('big'));
    w.mkdir(at('sub'));
    w.seal(at('sub'));
    w.seal(root);
    expect(() => lstatSync(join(tmp, 'out', 'sub'))).toThrow(/ENOENT/); // not before a push: nothing ran yet
    await w.settle();
    expect(snapshot(join(tmp, 'out'))).toEqual([
      ['.', '40555 1000'],
      ['./big', `100444 1000 ${big.toString('hex')}`],
      ['./link', `120777 1000 -> ${Buffer.from('big').toString('hex')}`],
      ['./run', '100555 1000 '],
      ['./sub', '40555 1000'],
    ]);
  });

  it('reports the first failing call at settle as Node would (code, syscall, path) and runs nothing after it', async () => {
    const w = await writer();
    mkdirSync(join(tmp, 'taken'));
    w.mkdir(Buffer.from(join(tmp, 'taken')));
    w.mkdir(Buffer.from(join(tmp, 'after')));
    const error = await w.settle().then(
      () => undefined,
      (e: unknown) => e as NodeJS.ErrnoException,
    );
    expect(error).toMatchObject({ code: 'EEXIST', syscall: 'mkdir', path: join(tmp, 'taken') });
    expect(error?.message).toBe(`EEXIST: file already exists, mkdir '${join(tmp, 'taken')}'`); // Node's own words
    expect(() => lstatSync(join(tmp, 'after'))).toThrow(/ENOENT/);
    // Stopped for good: every settle rejects the same way (with nothing new, and with more), ready()
    // too, and later work is dropped.
    await expect(w.settle()).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(w.ready()).rejects.toMatchObject({ code: 'EEXIST' });
    w.mkdir(Buffer.from(join(tmp, 'later')));
    await expect(w.settle()).rejects.toMatchObject({ code: 'EEXIST' });
    expect(() => lstatSync(join(tmp, 'later'))).toThrow(/ENOENT/);
  });

  it('refuses a buffer that does not decode (EINVAL), without reading past it', async () => {
    const native = await import('strata-native');
    const cases: Array<[string, Buffer]> = [
      ['an unknown operation', Buffer.from([9, 0, 0, 0])],
      ['a path longer than the buffer', Buffer.concat([Buffer.from([1, 0, 0, 0, 200, 0, 0, 0]), Buffer.from('/x\0')])],
      ['a path with no NUL after it', Buffer.concat([Buffer.from([1, 0, 0, 0, 2, 0, 0, 0]), Buffer.from('/xy')])],
      ['a write to a slot never opened', Buffer.from([3, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0x41])],
      ['a slot out of range', Buffer.from([4, 0, 0, 0, 0, 1, 0, 0])],
      ['an operation cut short', Buffer.from([1, 0])],
    ];
    for (const [what, ops] of cases) {
      const w = native.treeWriter();
      const after = join(tmp, `after-${cases.findIndex(([x]) => x === what)}`);
      const mkdirAfter = Buffer.concat([Buffer.from([1, 0, 0, 0]), Buffer.alloc(4), Buffer.from(`${after}\0`)]);
      mkdirAfter.writeUInt32LE(after.length, 4);
      native.treeWriterPush(w, ops);
      native.treeWriterPush(w, mkdirAfter);
      await expect(native.treeWriterIdle(w), what).rejects.toMatchObject({ code: 'EINVAL', syscall: 'treeWriter' });
      expect(native.treeWriterFailed(w)).toBe(true);
      expect(() => lstatSync(after), what).toThrow(/ENOENT/);
    }
  });

  it('takes lock files in order without waiting, and stops at the first one held or stale', async () => {
    const names = ['a', 'b', 'c', 'd', 'e'].map((n) => join(tmp, `${n}.lock`));
    writeFileSync(names[3]!, 'd'); // released by an earlier holder: stale
    const w = await writer();
    const before = openFds();
    for (const n of names) w.lockFile(Buffer.from(n));
    w.flush();
    await w.settle();
    const fds = w.takeLocks();
    expect(fds.map((fd) => fd >= 0)).toEqual([true, true, true, false, false]);
    expect(openFds()).toBe(before + 3);
    // Held: another process cannot take them.
    for (const n of names.slice(0, 3)) expect(spawnSync('flock', ['-n', n, 'true']).status).toBe(1);
    releaseTaken(names, fds);
    expect(openFds()).toBe(before);
    expect(names.slice(0, 3).some((n) => existsSync(n))).toBe(false);
    // A lock another process holds stops the taking there, though the next ones are free.
    const held = spawn('flock', [names[1]!, 'sleep', '5'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => held.on('exit', resolve));
    try {
      while (spawnSync('flock', ['-n', names[1]!, 'true']).status === 0) await new Promise((r) => setTimeout(r, 10));
      for (const n of [names[0]!, names[1]!, names[2]!]) w.lockFile(Buffer.from(n));
      await w.settle();
      const again = w.takeLocks();
      expect(again.map((fd) => fd >= 0)).toEqual([true, false, false]);
      releaseTaken(names, again);
      expect(w.takeLocks()).toEqual([]);
    } finally {
      held.kill();
      await exited;
    }
  });

  it('abandon closes the files a failed restore left open', async () => {
    const before = openFds();
    const w = await writer();
    const slots = [0, 1, 2].map((i) => w.openFile(Buffer.from(join(tmp, `f${i}`)), 0o444));
    w.write(slots[0]!, Buffer.from('part'), 0, 4);
    await w.settle();
    expect(openFds()).toBe(before + 3);
    await w.abandon();
    expect(openFds()).toBe(before);
    expect(readFileSync(join(tmp, 'f0'), 'utf8')).toBe('part');
  });

  it('serves at most MAX_RESTORES open files at once, with a typed error beyond', async () => {
    const w = await writer();
    for (let i = 0; i < TreeWriter.MAX_RESTORES; i++) w.openFile(Buffer.from(join(tmp, `f${i}`)), 0o444);
    expect(() => w.openFile(Buffer.from(join(tmp, 'one-more')), 0o444)).toThrow(expect.objectContaining({ code: 'WRITER_FULL' }));
    await w.abandon();
  });
});

describe('restores through a TreeWriter', () => {
  it('a NAR fed whole and one streamed in pieces give the trees of restores without one; the result waits for settle', async () => {
    const tree: NarEntry = {
      type: 'directory',
      entries: [
        [Buffer.from('bin'), { type: 'directory', entries: [[Buffer.from('tool'), file(Buffer.from('#!/bin/sh\n'), true)]] }],
        [Buffer.from('data'), file(Buffer.alloc(300 * 1024, 1))],
        [Buffer.from('empty'), { type: 'directory', entries: [] }],
        [Buffer.from('link'), { type: 'symlink', target: Buffer.from('bin/tool') }],
      ],
    };
    const bytes = await collect(encodeNar(tree));
    const w = await writer();
    const plain = restoreNarSync(bytes, join(tmp, 'plain'), CANONICAL);
    const whole = restoreNarSync(bytes, join(tmp, 'whole'), { ...CANONICAL, writer: w });
    const streamed = await restoreNar(Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)]), join(tmp, 'streamed'), { ...CANONICAL, writer: w });
    await w.settle();
    for (const r of [whole, streamed]) expect(r).toEqual(plain);
    const expected = snapshot(join(tmp, 'plain'));
    expect(snapshot(join(tmp, 'whole'))).toEqual(expected);
    expect(snapshot(join(tmp, 'streamed'))).toEqual(expected);
    expect((await collect(dumpPath(join(tmp, 'streamed')))).equals(bytes)).toBe(true);
  });

  it('a bad archive throws as without a writer, and leaves removal to the owner (after abandon)', async () => {
    // A file bigger than one operation buffer: part of the tree is handed to the pool before the archive breaks.
    const bytes = await collect(encodeNar({ type: 'directory', entries: [[Buffer.from('f'), file(Buffer.alloc(300 * 1024, 1))]] }));
    const before = openFds();
    const w = await writer();
    const target = join(tmp, 'cut');
    expect(() => restoreNarSync(bytes.subarray(0, bytes.length - 8), target, { ...CANONICAL, writer: w })).toThrow(expect.objectContaining({ code: 'NAR_INVALID' }));
    await w.abandon();
    expect(openFds()).toBe(before);
    expect(readdirSync(target)).toEqual(['f']); // made and left: the owner removes it
  });

  it('is not used where the restore must check its parent or the umask strips mode bits', async () => {
    const bytes = await collect(encodeNar(file(Buffer.from('x'))));
    const w = await writer();
    // The writer would be racing the snapshot below: count what it is handed instead.
    let opened = 0;
    const openFile = w.openFile.bind(w);
    w.openFile = (path, mode) => (opened++, openFile(path, mode));
    restoreNarSync(bytes, join(tmp, 'checked'), { canonicalise: true, writer: w });
    restoreNarSync(bytes, join(tmp, 'umask'), { ...CANONICAL, umask: 0o277, writer: w });
    expect(opened).toBe(0);
    expect(snapshot(join(tmp, 'checked'))).toEqual([['.', '100444 1000 78']]); // made at once: no settle needed
    expect(snapshot(join(tmp, 'umask'))).toEqual([['.', '100444 1000 78']]);
  });

  it('a streamed 40 MiB file goes through with the queue bounded (ready() makes the restore wait above the limit)', async () => {
    const size = 40 * 1024 * 1024;
    const bytes = await collect(encodeNar(file(Buffer.alloc(size, 3))));
    const w = await writer({ queuedLimit: 1 << 20 });
    let waits = 0;
    const ready = w.ready.bind(w);
    w.ready = () => {
      const p = ready();
      if (p) waits++;
      return p;
    };
    const r = await restoreNar(Readable.from(inPieces(bytes, 1 << 20)), join(tmp, 'big'), { ...CANONICAL, writer: w });
    await w.settle();
    expect(waits).toBeGreaterThan(0);
    expect(r.narHash.equals(Hash.of('sha256', bytes))).toBe(true);
    expect(lstatSync(join(tmp, 'big')).size).toBe(size);
  });
});

// Random trees restored with and without a writer, several restores sharing it (as a batch does).
const treeArb = narTreeArb(3000);

describe('property: a restore through a writer makes the tree a restore without one makes', () => {
  it('holds for batches of random trees fed in random pieces', async () => {
    let i = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(treeArb, { minLength: 1, maxLength: 6 }), fc.integer({ min: 1, max: 500 }), async (trees, step) => {
        const w = await writer();
        const made: Array<[string, string]> = [];
        for (const tree of trees) {
          const bytes = await collect(encodeNar(tree));
          const a = join(tmp, `plain${i}`);
          const b = join(tmp, `writer${i++}`);
          restoreNarSync(bytes, a, CANONICAL);
          await restoreNar(Readable.from(inPieces(bytes, step)), b, { ...CANONICAL, writer: w });
          made.push([a, b]);
        }
        await w.settle();
        for (const [a, b] of made) expect(snapshot(b)).toEqual(snapshot(a));
      }),
      { numRuns: 40 },
    );
  });
});
