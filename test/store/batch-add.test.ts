/**
 * The batched add (`LocalStore.addFromNars`) and the copies that use it: one registration
 * transaction per batch, references in any order inside a batch, all or nothing, NARs opened
 * only for paths still to add, fetched in parallel along a chain, durable before registration.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { afterEach, describe, expect, it, vi } from 'vitest';

import { Hash, nix32Encode } from '../../src/core/hash.js';
import { StorePath } from '../../src/core/store-path.js';
import { dumpPath } from '../../src/fs/nar-dump.js';
import { copyPaths } from '../../src/store/copy.js';
import { checkContentAddress } from '../../src/store/local/content-check.js';
import { EarlyWriteback, FSYNC_LIMIT } from '../../src/store/local/durable.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import type { NarSource, PathInfo, Store } from '../../src/store/store.js';
import { addShDrv } from '../build/helpers.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

/**
 * syncfs(2) as the store calls it (native/), watched: `seen` runs at each call, `fail` makes it
 * fail as a writeback error would (EIO), which no real file system here can be made to do.
 */
const syncProbe = vi.hoisted(() => ({ fail: false, seen: undefined as (() => void) | undefined }));
vi.mock('strata-native', async (importOriginal) => {
  const real = await importOriginal<typeof import('strata-native')>();
  return {
    ...real,
    syncfs: (fd: number) => {
      syncProbe.seen?.();
      if (syncProbe.fail) return Promise.reject(Object.assign(new Error('EIO: i/o error, syncfs'), { code: 'EIO' }));
      return real.syncfs(fd);
    },
  };
});

async function openLocal(root: string): Promise<LocalStore> {
  return (await openStore(root)) as LocalStore;
}

interface Item {
  info: PathInfo;
  nar: Buffer;
}

/**
 * A chain of `n` input-addressed paths, each a directory of `files` files whose contents name
 * the previous path (a real reference), references first.
 */
async function chain(work: string, n: number, files = 2): Promise<Item[]> {
  const items: Item[] = [];
  for (let i = 0; i < n; i++) {
    const path = StorePath.fromBaseName(`${nix32Encode(randomBytes(20))}-link-${i}`);
    const prev = items[i - 1]?.info.path;
    const dir = join(work, `src-${i}`);
    mkdirSync(dir);
    for (let f = 0; f < files; f++)
      writeFileSync(
        join(dir, `f${f}`),
        `link ${i} file ${f} ${prev ? `/nix/store/${prev.baseName}` : ''}\n`,
      );
    const chunks: Buffer[] = [];
    for await (const c of dumpPath(dir)) chunks.push(c as Buffer);
    const nar = Buffer.concat(chunks);
    items.push({
      info: {
        path,
        narHash: Hash.of('sha256', nar),
        narSize: nar.length,
        references: prev ? [prev] : [],
        ultimate: false,
        sigs: [],
      },
      nar,
    });
  }
  return items;
}

const asSources = (items: Item[], opened: string[] = []): NarSource[] =>
  items.map(({ info, nar }, i) => ({
    info,
    // Bytes for some, a stream for the others: both kinds of source.
    nar: () => (opened.push(info.path.baseName), i % 2 === 0 ? nar : Readable.from([nar])),
  }));

afterEach(() => {
  vi.restoreAllMocks();
});

describe('LocalStore.addFromNars', () => {
  it('takes the locks it can ahead, waits for one another process holds (in sorted order), and leaves no lock file', async () => {
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    try {
      const items = await chain(work, 5);
      const locks = items.map((i) => `${store.realPath(i.info.path)}.lock`).sort();
      const [first, held, last] = [locks[0]!, locks[2]!, locks.at(-1)!];
      // A real other process holds one path's lock (flock(1), as Nix would) for a second.
      const spawnedAt = Date.now();
      const holder = spawn('flock', [held, 'sleep', '1'], { stdio: 'ignore' });
      const exited = new Promise((resolve) => holder.on('exit', resolve));
      while (spawnSync('flock', ['-n', held, 'true']).status === 0) await new Promise((r) => setTimeout(r, 10));
      const adding = store.addFromNars(asSources(items), { concurrency: 2 });
      await new Promise((r) => setTimeout(r, 300));
      // Taken ahead: the one sorting before the held one; not yet: the one after it.
      expect(spawnSync('flock', ['-n', first, 'true']).status).toBe(1);
      expect(spawnSync('flock', ['-n', last, 'true']).status).toBe(0);
      await adding;
      expect(Date.now() - spawnedAt).toBeGreaterThanOrEqual(1000);
      await exited;
      for (const { info } of items) expect(await store.isValidPath(info.path)).toBe(true);
      expect(readdirSync(store.realStoreDir).filter((n) => n.endsWith('.lock'))).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('releases the locks it took ahead when the batch fails', async () => {
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    try {
      const items = await chain(work, 3);
      const bad = { ...items[2]!, info: { ...items[2]!.info, narHash: Hash.of('sha256', 'not the NAR') } };
      const e = await store.addFromNars(asSources([items[0]!, items[1]!, bad])).catch((x: unknown) => x);
      expect((e as { code?: string }).code).toBe('HASH_MISMATCH');
      for (const i of items) {
        const lock = `${store.realPath(i.info.path)}.lock`;
        expect(existsSync(lock), lock).toBe(false);
      }
      expect(await store.queryAllValidPaths()).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('registers a batch given referrers first in one transaction, and real Nix accepts the store', async () => {
    const work = tempDir();
    const root = join(work, 's');
    const store = await openLocal(root);
    try {
      const items = await chain(work, 6);
      const register = vi.spyOn(store.db, 'register');
      await store.addFromNars(asSources([...items].reverse()), { concurrency: 3 });
      expect(register).toHaveBeenCalledTimes(1);
      expect(register.mock.calls[0]![0].length).toBe(6);
      for (const { info } of items) {
        const got = await store.queryPathInfo(info.path);
        expect(got?.narHash.equals(info.narHash)).toBe(true);
        expect(got?.references.map(String)).toEqual(info.references.map(String));
      }
      // One temp-roots record for the batch, every path in it.
      const roots = readFileSync(
        join(root, 'nix/var/nix/temproots', String(process.pid)),
        'utf8',
      ).split('\0');
      for (const { info } of items) expect(roots).toContain(store.storeDir.print(info.path));
      // Nothing but the objects (and no staging dir) is left in the store dir.
      expect(readdirSync(store.realStoreDir).sort()).toEqual(
        items.map((i) => i.info.path.baseName).sort(),
      );
      if (haveNix())
        expect(runNix('nix-store', ['--store', root, '--verify', '--check-contents']).code).toBe(0);
    } finally {
      await store.close();
    }
  });

  it('opens no NAR for a path that is valid already', async () => {
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    try {
      const items = await chain(work, 4);
      await store.addFromNars(asSources(items.slice(0, 2)));
      const opened: string[] = [];
      await store.addFromNars(asSources(items, opened));
      expect(opened.sort()).toEqual(
        items
          .slice(2)
          .map((i) => i.info.path.baseName)
          .sort(),
      );
      expect((await store.queryAllValidPaths()).length).toBe(4);
    } finally {
      await store.close();
    }
  });

  it('is all or nothing: one bad NAR leaves no path of the batch valid and nothing in the store dir', async () => {
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    try {
      const items = await chain(work, 6);
      const bad = items.map((it, i) =>
        i === 3 ? { ...it, info: { ...it.info, narHash: Hash.of('sha256', 'other') } } : it,
      );
      await expect(store.addFromNars(asSources(bad), { concurrency: 2 })).rejects.toMatchObject({
        code: 'HASH_MISMATCH',
      });
      expect(await store.queryAllValidPaths()).toEqual([]);
      expect(readdirSync(store.realStoreDir)).toEqual([]);
      // The same batch, honest, goes in afterwards.
      await store.addFromNars(asSources(items));
      expect((await store.queryAllValidPaths()).length).toBe(6);
    } finally {
      await store.close();
    }
  });

  it('replaces leftovers of any kind under the names it adds (file, empty or read-only dir, symlink)', async () => {
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    try {
      const items = await chain(work, 5);
      const at = (i: number) => store.realPath(items[i]!.info.path);
      writeFileSync(at(0), 'half a file');
      mkdirSync(at(1));
      mkdirSync(join(at(2), 'sub'), { recursive: true });
      writeFileSync(join(at(2), 'sub', 'f'), 'x');
      chmodSync(join(at(2), 'sub'), 0o555);
      chmodSync(at(2), 0o555);
      symlinkSync(work, at(3)); // Through a symlink nothing may be written or removed.
      symlinkSync(join(work, 'nowhere'), at(4));
      await store.addFromNars(asSources(items));
      for (const { info, nar } of items) {
        const chunks: Buffer[] = [];
        for await (const c of dumpPath(store.realPath(info.path))) chunks.push(c as Buffer);
        expect(Buffer.concat(chunks).equals(nar)).toBe(true);
      }
      expect(readdirSync(work).sort()).toEqual([...items.map((_, i) => `src-${i}`), 's'].sort());
    } finally {
      await store.close();
    }
  });

  it('refuses a reference that is neither valid nor in the batch before opening any NAR', async () => {
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    try {
      const items = await chain(work, 3);
      const opened: string[] = [];
      await expect(store.addFromNars(asSources(items.slice(1), opened))).rejects.toMatchObject({
        code: 'REFERENCE_INVALID',
        value: store.storeDir.print(items[0]!.info.path),
      });
      expect(opened).toEqual([]);
      expect(await store.queryAllValidPaths()).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('starts write-back early only once a batch has restored 1,024 objects, one syncfs at a time', async () => {
    const work = tempDir();
    let syncs = 0;
    syncProbe.seen = () => syncs++;
    try {
      const early = new EarlyWriteback(work);
      early.restored(600);
      early.restored(423);
      await early.settled();
      expect(syncs).toBe(0);
      early.restored(1);
      early.restored(500); // one is in flight: no second
      await early.settled();
      expect(syncs).toBe(1);
      early.restored(1);
      await early.settled();
      expect(syncs).toBe(2);
    } finally {
      syncProbe.seen = undefined;
    }
  });

  it('makes a large batch durable with a syncfs after every path is in place, and registers nothing when it fails', async () => {
    const work = tempDir();
    const store = await openLocal(join(work, 's'));
    // At each syncfs: how many of the batch's paths are in place under their names.
    let placed: number[] = [];
    let items: Item[] = [];
    syncProbe.seen = () => placed.push(items.filter((i) => existsSync(join(store.realStoreDir, i.info.path.baseName))).length);
    try {
      items = await chain(work, 8, 4); // 8 × 5 objects: above FSYNC_LIMIT
      expect(8 * 5).toBeGreaterThan(FSYNC_LIMIT);
      syncProbe.fail = true;
      await expect(store.addFromNars(asSources(items))).rejects.toMatchObject({
        code: 'SYNC_FAILED',
        message: expect.stringContaining('EIO'),
      });
      expect(await store.queryAllValidPaths()).toEqual([]);
      expect(readdirSync(store.realStoreDir).filter((n) => !n.endsWith('.lock'))).toEqual([]);
      syncProbe.fail = false;
      placed = [];
      await store.addFromNars(asSources(items));
      // The last syncfs comes after the renames (earlier ones may run during the restore).
      expect(placed.at(-1)).toBe(8);
      expect((await store.queryAllValidPaths()).length).toBe(8);
      // A small add is fsynced object by object instead: no syncfs.
      placed = [];
      mkdirSync(join(work, 'small'));
      const [one] = await chain(join(work, 'small'), 1, 1);
      await store.addFromNars(asSources([one!]));
      expect(placed).toEqual([]);
      expect(await store.isValidPath(one!.info.path)).toBe(true);
    } finally {
      syncProbe.seen = undefined;
      syncProbe.fail = false;
      await store.close();
    }
  });
});

describe('copyPaths into a local store, batched', () => {
  it('fetches the NARs of a chain in parallel and registers the closure in one transaction', async () => {
    const work = tempDir();
    const src = await openLocal(join(work, 'src'));
    const dst = await openLocal(join(work, 'dst'));
    try {
      const items = await chain(work, 12);
      await src.addFromNars(asSources(items));
      const top = items.at(-1)!.info.path;
      // A slow source: each NAR takes 30 ms to start, as over a network (streams only: no narBytes).
      let inFlight = 0;
      let most = 0;
      const slow: Store = Object.create(src, {
        narBytes: { value: undefined },
        narFromPath: {
          value: async (p: StorePath) => {
            inFlight++;
            most = Math.max(most, inFlight);
            await new Promise((r) => setTimeout(r, 30));
            inFlight--;
            return src.narFromPath(p);
          },
        },
      });
      const register = vi.spyOn(dst.db, 'register');
      const r = await copyPaths(slow, dst, [top], {
        recursive: true,
        requireSigs: false,
        concurrency: 4,
      });
      expect(r.copied.map(String)).toEqual(items.map((i) => i.info.path.baseName));
      expect(most).toBe(4);
      expect(register).toHaveBeenCalledTimes(1);
      expect((await dst.queryAllValidPaths()).length).toBe(12);
    } finally {
      await src.close();
      await dst.close();
    }
  });

  it('hands small NARs to the store as bytes and streams large ones; a source sending more than NarSize is cut off there', async () => {
    const work = tempDir();
    const src = await openLocal(join(work, 'src'));
    const dst = await openLocal(join(work, 'dst'));
    try {
      const small = await src.addText('small', 'x'.repeat(100), []);
      const big = await src.addText('big', randomBytes(1536 * 1024).toString('base64'), [
        small.path,
      ]);
      const kinds: string[] = [];
      const add = dst.addFromNars.bind(dst);
      vi.spyOn(dst, 'addFromNars').mockImplementation((items, options) =>
        add(
          items.map((i) => ({
            info: i.info,
            nar: async () => {
              const n = await i.nar();
              kinds.push(`${i.info.path.name}:${n instanceof Uint8Array ? 'bytes' : 'stream'}`);
              return n;
            },
          })),
          options,
        ),
      );
      await copyPaths(src, dst, [big.path], { recursive: true, requireSigs: false });
      expect(kinds.sort()).toEqual(['big:stream', 'small:bytes']);
      expect(await dst.isValidPath(big.path)).toBe(true);

      // A source that keeps sending after the NAR (a stream: no narBytes): stopped at the
      // declared size, nothing valid.
      const dst2 = await openLocal(join(work, 'dst2'));
      let sent = 0;
      const endless: Store = Object.create(src, {
        narBytes: { value: undefined },
        narFromPath: {
          value: async (p: StorePath) => {
            const nar = Buffer.concat(await (await src.narFromPath(p)).toArray());
            return Readable.from(
              (function* () {
                yield nar;
                for (sent = 0; sent < 10_000; sent++) yield Buffer.alloc(64 * 1024);
              })(),
            );
          },
        },
      });
      const e = await copyPaths(endless, dst2, [small.path], { requireSigs: false }).catch(
        (x: unknown) => x,
      );
      expect((e as { code?: string }).code).toBe('SIZE_MISMATCH');
      expect(sent, 'read ahead at most a few MiB').toBeLessThan(64);
      expect(await dst2.queryAllValidPaths()).toEqual([]);
      await dst2.close();
    } finally {
      await src.close();
      await dst.close();
    }
  });

  it('checks a text address against a NAR given as bytes without reading the file back, and refuses a lie', async () => {
    const work = tempDir();
    const src = await openLocal(join(work, 'src'));
    const dst = await openLocal(join(work, 'dst'));
    try {
      const text = await src.addText('t', 'hello\n', []);
      const bytes = Buffer.concat(await (await src.narFromPath(text.path)).toArray());
      // Hashed from memory: the staged file is not needed (here it does not exist at all), so
      // the restore's pending nodes are not waited for either.
      const beforeReading = vi.fn(async () => {});
      await checkContentAddress(src.storeDir, text, join(work, 'no-such-file'), {
        narSha256: text.narHash,
        nar: bytes,
        beforeReading,
      });
      expect(beforeReading).not.toHaveBeenCalled();
      // Without the NAR the file is read back, and only after the wait (which makes it here).
      const staged = join(work, 'staged');
      await checkContentAddress(src.storeDir, text, staged, {
        beforeReading: async () => writeFileSync(staged, 'hello\n'),
      });
      const other = Buffer.concat(
        await (await src.narFromPath((await src.addText('t', 'hullo\n', [])).path)).toArray(),
      );
      const lie = { ...text, narHash: Hash.of('sha256', other), narSize: other.length };
      const e = await dst.addFromNars([{ info: lie, nar: () => other }]).catch((x: unknown) => x);
      expect((e as { code?: string }).code).toBe('CA_MISMATCH');
      expect(await dst.queryAllValidPaths()).toEqual([]);
    } finally {
      await src.close();
      await dst.close();
    }
  });

  it('registers a .drv whose input .drv is in the same batch, with its DerivationOutputs rows', async () => {
    const work = tempDir();
    const src = await openLocal(join(work, 'src'));
    const dst = await openLocal(join(work, 'dst'));
    try {
      const dep = await addShDrv(src, 'dep', 'echo dep > $out');
      const top = await addShDrv(src, 'top', 'echo top > $out', {
        inputDrvs: new Map([[dep.baseName, ['out']]]),
      });
      const register = vi.spyOn(dst.db, 'register');
      await copyPaths(src, dst, [top], { recursive: true, requireSigs: false });
      expect(register).toHaveBeenCalledTimes(1);
      for (const drv of [dep, top])
        expect(
          [...(await dst.queryDerivationOutputs(drv))].map(([k, v]) => [k, String(v)]),
        ).toEqual([...(await src.queryDerivationOutputs(drv))].map(([k, v]) => [k, String(v)]));
    } finally {
      await src.close();
      await dst.close();
    }
  });
});
