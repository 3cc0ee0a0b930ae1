/**
 * `nix-store --export` streams into strata: `LocalStore.addFromExport` (each NAR restored as it
 * is read), `importExport` for stores that take whole NARs (large NARs spilled to a file), and
 * `strata import`, checked against real Nix 2.8's `nix-store --import` of the same stream.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';

import { Hash, nix32Encode } from '../../src/core/hash.js';
import { StorePath } from '../../src/core/store-path.js';
import { dumpPath } from '../../src/fs/nar-dump.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { importExport } from '../../src/store/nar-export.js';
import { openStore } from '../../src/store/open.js';
import type { PathInfo } from '../../src/store/store.js';
import { strataOk } from '../support/cli.js';
import { haveNix, nixEnv } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

async function openLocal(root: string): Promise<LocalStore> {
  return (await openStore(root)) as LocalStore;
}

/**
 * A source store with a chain of `n` paths (each refers to the previous one; one holds an
 * executable, a symlink and an empty directory, one is a single file, one has a file of
 * `bigBytes`), and real Nix's export of all of them.
 */
async function exported(
  work: string,
  n: number,
  bigBytes = 0,
): Promise<{ src: string; paths: StorePath[]; stream: Buffer }> {
  const src = join(work, 'src');
  const store = await openLocal(src);
  const paths: StorePath[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const prev = paths[i - 1];
      const tree = join(work, `tree-${i}`);
      const text = `link ${i} ${prev ? store.storeDir.print(prev) : ''}\n`;
      if (i === 1) writeFileSync(tree, text);
      else {
        mkdirSync(join(tree, 'bin'), { recursive: true });
        mkdirSync(join(tree, 'empty'));
        writeFileSync(join(tree, 'bin', 'run'), `#!/bin/sh\n${text}`, { mode: 0o755 });
        writeFileSync(join(tree, 'data'), i === 2 && bigBytes > 0 ? randomBytes(bigBytes) : text);
        spawnSync('ln', ['-s', 'bin/run', join(tree, 'link')]);
      }
      const chunks: Buffer[] = [];
      for await (const c of dumpPath(tree)) chunks.push(c as Buffer);
      const nar = Buffer.concat(chunks);
      const info: PathInfo = {
        path: StorePath.fromBaseName(`${nix32Encode(randomBytes(20))}-item-${i}`),
        narHash: Hash.of('sha256', nar),
        narSize: nar.length,
        references: prev ? [prev] : [],
        ultimate: false,
        sigs: [],
        ...(i === 3
          ? { deriver: StorePath.fromBaseName(`${nix32Encode(randomBytes(20))}-item-3.drv`) }
          : {}),
      };
      await store.addFromNars([{ info, nar: () => nar }]);
      paths.push(info.path);
    }
  } finally {
    await store.close();
  }
  const r = spawnSync(
    'nix-store',
    ['--store', src, '--export', ...paths.map((p) => `/nix/store/${p.baseName}`)],
    { env: nixEnv(), maxBuffer: 1 << 30 },
  );
  if (r.status !== 0) throw new Error(r.stderr.toString());
  return { src, paths, stream: r.stdout };
}

/** Every row that matters, as both stores must agree on it. */
function digest(root: string): string {
  const db = new Database(join(root, 'nix/var/nix/db/db.sqlite'), { readonly: true });
  try {
    return JSON.stringify(
      db
        .prepare(
          `SELECT v.path, v.hash, v.narSize, v.deriver, v.ca, (SELECT group_concat(w.path, ' ') FROM Refs JOIN ValidPaths w ON Refs.reference = w.id WHERE Refs.referrer = v.id) AS refs FROM ValidPaths v ORDER BY v.path`,
        )
        .all(),
    );
  } finally {
    db.close();
  }
}

/** `bytes` cut into pieces of `size` bytes: every boundary inside a length, a tag, a name. */
function pieces(bytes: Buffer, size: number): Readable {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return Readable.from(out);
}

/** `bytes` in pieces of `size` bytes, each copied into the same buffer (as `strata import` reads stdin). */
async function* reused(bytes: Buffer, size: number): AsyncGenerator<Uint8Array> {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < bytes.length; i += size) {
    const n = bytes.copy(buf, 0, i, i + size);
    yield buf.subarray(0, n);
    buf.fill(0xee); // Whatever the consumer kept of this chunk is garbage now.
  }
}

function nixImport(root: string, stream: Buffer): void {
  const r = spawnSync('nix-store', ['--store', root, '--import'], { env: nixEnv(), input: stream });
  if (r.status !== 0) throw new Error(r.stderr.toString());
}

describe.runIf(haveNix())('importing nix-store --export streams', () => {
  it('addFromExport gives the rows nix-store --import gives, in one batch, whatever the chunking, from fresh or reused buffers', async () => {
    const work = tempDir();
    const { paths, stream } = await exported(work, 5);
    const nixRoot = join(work, 'nix');
    nixImport(nixRoot, stream);
    for (const [size, reuse] of [
      [1 << 20, false],
      [7, false],
      [1, false],
      [4096, true],
      [13, true],
    ] as const) {
      const root = join(work, `strata-${size}-${reuse}`);
      const store = await openLocal(root);
      const batches: string[][] = [];
      try {
        const source = reuse ? reused(stream, size) : pieces(stream, size);
        const got = await store.addFromExport(source, (ps) => batches.push(ps.map(String)));
        expect(got.map(String)).toEqual(paths.map(String));
        expect(batches).toEqual([paths.map(String)]);
      } finally {
        await store.close();
      }
      expect(digest(root)).toBe(digest(nixRoot));
      expect(
        readdirSync(join(root, 'nix/store'))
          .filter((n) => !n.endsWith('.lock'))
          .sort(),
      ).toEqual(paths.map((p) => p.baseName).sort());
      const v = spawnSync('nix-store', ['--store', root, '--verify', '--check-contents'], {
        env: nixEnv(),
        encoding: 'utf8',
      });
      expect(v.status).toBe(0);
      expect(v.stderr).not.toMatch(/error|modified/i);
    }
  });

  it('waits for a path lock another process holds, taking the locks in sorted order, and leaves no lock file', async () => {
    const work = tempDir();
    const { paths, stream } = await exported(work, 5);
    const root = join(work, 'strata');
    const store = await openLocal(root);
    try {
      // Locks are waited for in sorted order: one sorting after the held one is not waited for yet.
      const locks = paths.map((p) => `${store.realPath(p)}.lock`).sort();
      const held = locks[1]!;
      const other = locks.at(-1)!;
      // A real other process holds one path's lock (flock(1), as Nix would) for a second.
      const spawnedAt = Date.now();
      const holder = spawn('flock', [held, 'sleep', '1']);
      let holderGone = false;
      const exited = new Promise<void>((resolve) => holder.on('exit', () => resolve(void (holderGone = true))));
      while (spawnSync('flock', ['-n', held, 'true']).status === 0) await new Promise((r) => setTimeout(r, 10));
      const importing = store.addFromExport(pieces(stream, 4096));
      // While it waits for the held one, it has not taken the last one (sorted order, as Nix).
      await new Promise((r) => setTimeout(r, 300));
      expect(holderGone).toBe(false);
      expect(spawnSync('flock', ['-n', other, 'true']).status).toBe(0);
      const got = await importing;
      // The lock is free only once `sleep 1`, started after spawnedAt, has ended.
      expect(Date.now() - spawnedAt).toBeGreaterThanOrEqual(1000);
      await exited;
      expect(got.map(String)).toEqual(paths.map(String));
    } finally {
      await store.close();
    }
    expect(readdirSync(join(root, 'nix/store')).filter((n) => n.endsWith('.lock'))).toEqual([]);
  });

  it('importExport (whole NARs, the largest spilled to a file) gives the same rows', async () => {
    const work = tempDir();
    const { stream } = await exported(work, 4, 300_000);
    const nixRoot = join(work, 'nix');
    nixImport(nixRoot, stream);
    const root = join(work, 'strata');
    const store = await openLocal(root);
    try {
      // A 100 KB spill limit: the 300 KB path goes through a temporary file, the others stay in memory.
      await importExport(store, pieces(stream, 4096), () => {}, 100_000);
    } finally {
      await store.close();
    }
    expect(digest(root)).toBe(digest(nixRoot));
  });

  it('rejects a damaged stream at any point and leaves no path of it valid and nothing in the store dir', async () => {
    const work = tempDir();
    const { stream } = await exported(work, 3);
    const bad: Array<[string, Buffer]> = [];
    for (const cut of [4, 8, 40, 200, stream.length >> 1, stream.length - 9, stream.length - 1])
      bad.push([`cut at ${cut}`, stream.subarray(0, cut)]);
    const flipped = Buffer.from(stream);
    flipped.write('(', flipped.indexOf('type') - 8 + 8, 'latin1'); // a tag damaged inside the first NAR
    bad.push(['a damaged tag', flipped]);
    bad.push([
      'a bad start',
      Buffer.concat([Buffer.from([2, 0, 0, 0, 0, 0, 0, 0]), stream.subarray(8)]),
    ]);
    bad.push(['trailing bytes', Buffer.concat([stream, Buffer.alloc(8, 1)])]);
    for (const [what, bytes] of bad) {
      const root = join(work, `s-${bad.findIndex(([w]) => w === what)}`);
      const store = await openLocal(root);
      try {
        const err = await store.addFromExport(Readable.from([bytes])).then(
          () => undefined,
          (e: unknown) => e as { code?: string },
        );
        expect(err?.code, what).toMatch(/^(EXPORT_INVALID|NAR_INVALID)$/);
        // Trailing bytes too: the stream is checked to its end before its last batch is published.
        expect(await store.queryAllValidPaths(), what).toEqual([]);
        expect(
          readdirSync(join(root, 'nix/store')).filter((n) => !n.endsWith('.lock')),
          what,
        ).toEqual([]);
      } finally {
        await store.close();
      }
    }
  });

  it('refuses a path whose reference is neither valid nor in the stream', async () => {
    const work = tempDir();
    const { paths, src } = await exported(work, 2);
    const r = spawnSync(
      'nix-store',
      ['--store', src, '--export', `/nix/store/${paths[1]!.baseName}`],
      { env: nixEnv(), maxBuffer: 1 << 30 },
    );
    const store = await openLocal(join(work, 'dst'));
    try {
      await expect(store.addFromExport(Readable.from([r.stdout]))).rejects.toMatchObject({
        code: 'REFERENCE_INVALID',
      });
      expect(await store.queryAllValidPaths()).toEqual([]);
      expect(readdirSync(store.realStoreDir).filter((n) => !n.endsWith('.lock'))).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('strata import reads the stream from stdin and prints the paths, as nix-store --import', async () => {
    const work = tempDir();
    const { paths, stream } = await exported(work, 3);
    const root = join(work, 'cli');
    const out = await strataOk(['--store', root, 'import'], { input: stream });
    expect(out).toBe(paths.map((p) => `/nix/store/${p.baseName}\n`).join(''));
    const nixRoot = join(work, 'nix');
    nixImport(nixRoot, stream);
    expect(digest(root)).toBe(digest(nixRoot));
    // Again: nothing to add, the same lines.
    expect(await strataOk(['--store', root, 'import'], { input: stream })).toBe(out);
    expect(existsSync(join(root, 'nix/store'))).toBe(true);
  });
});
