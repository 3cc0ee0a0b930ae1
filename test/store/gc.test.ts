import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { isStrataError } from '../../src/core/error.js';
import type { StorePath } from '../../src/core/store-path.js';
import { tryLockFd } from '../../src/store/local/flock.js';
import { collectGarbage, deletePaths, showMiB } from '../../src/store/local/gc.js';
import { LocalStore } from '../../src/store/local/local-store.js';
import { findRoots } from '../../src/store/local/roots.js';
import { openStore } from '../../src/store/open.js';
import { ensureBuilt, ROOT as REPO_ROOT, runStrata } from '../support/cli.js';
import { nixEnv, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';

const open = async (root: string): Promise<LocalStore> => (await openStore(root)) as LocalStore;

/** Opens a store, runs `fn`, closes it (dropping this process's temp roots). */
async function withStore<T>(root: string, fn: (s: LocalStore) => Promise<T>): Promise<T> {
  const s = await open(root);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

function storeEntries(root: string): string[] {
  return readdirSync(join(root, 'nix/store'))
    .filter((n) => n !== '.links')
    .sort();
}

/** Runs the built CLI and returns stdout, failing on a non-zero exit. */
async function strataOk(args: string[]): Promise<string> {
  ensureBuilt();
  const r = await runStrata(args);
  if (r.code !== 0) throw new Error(`strata ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout.toString();
}

function linkNames(root: string): string[] {
  const dir = join(root, 'nix/store/.links');
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

/** Spawns a long-running process and waits until it printed `ready`. */
function spawnReady(cmd: string, args: string[], options: { cwd?: string } = {}): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: options.cwd ?? REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve(child);
    });
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`child exited ${code} before ready: ${out}`)));
  });
}

async function killAndWait(child: ChildProcess): Promise<void> {
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await done;
}

describe('collectGarbage()', () => {
  it('keeps direct, indirect, profile and marker-file roots with their closures, deletes the rest', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const state = join(root, 'nix/var/nix');
    const p = await withStore(root, async (s) => {
      const dep = await s.addText('dep', 'dependency', []);
      const direct = await s.addText('direct', 'd', [dep.path]);
      const indirect = await s.addText('indirect', 'i', []);
      const profile = await s.addText('profile', 'p', []);
      const marker = await s.addText('marker', 'm', []);
      const garbage = await s.addText('garbage', 'g', [dep.path]);
      return { dep, direct, indirect, profile, marker, garbage };
    });
    const full = (i: { path: StorePath }) => `/nix/store/${i.path.baseName}`;
    symlinkSync(full(p.direct), join(state, 'gcroots', 'direct'));
    // An indirect root: gcroots/auto/<x> → ./result → the store path.
    symlinkSync(full(p.indirect), join(work, 'result'));
    mkdirSync(join(state, 'gcroots', 'auto'), { recursive: true });
    symlinkSync(join(work, 'result'), join(state, 'gcroots', 'auto', 'abc'));
    symlinkSync(join(work, 'gone'), join(state, 'gcroots', 'auto', 'stale'));
    mkdirSync(join(state, 'profiles', 'per-user'), { recursive: true });
    symlinkSync(full(p.profile), join(state, 'profiles', 'per-user', 'default-1-link'));
    writeFileSync(join(state, 'gcroots', p.marker.path.baseName), '');

    const roots = await withStore(root, (s) => findRoots(s));
    expect(roots.get(full(p.direct))).toEqual([join(state, 'gcroots', 'direct')]);
    expect(roots.get(full(p.indirect))).toEqual([join(work, 'result')]);
    expect(roots.get(full(p.profile))).toEqual([join(state, 'profiles', 'per-user', 'default-1-link')]);
    expect(roots.get(full(p.marker))).toEqual([join(state, 'gcroots', p.marker.path.baseName)]);
    expect(roots.has(full(p.garbage))).toBe(false);
    // A stale auto link is removed while looking.
    expect(existsSync(join(state, 'gcroots', 'auto', 'stale'))).toBe(false);

    const r = await withStore(root, (s) => collectGarbage(s));
    expect(r.deleted.map((d) => d.baseName)).toEqual([p.garbage.path.baseName]);
    expect(storeEntries(root)).toEqual([p.dep, p.direct, p.indirect, p.profile, p.marker].map((i) => i.path.baseName).sort());
    await withStore(root, async (s) => {
      expect(await s.isValidPath(p.garbage.path)).toBe(false);
      expect(await s.isValidPath(p.dep.path)).toBe(true);
    });
  });

  it('keeps a path its root named while it was not yet valid, when it becomes valid during the collection', async () => {
    // A build's output gets its gcroot before it exists; if it is registered after the roots
    // were read, the collection must still count that root (torture suite, RELIABILITY.md).
    const work = tempDir();
    const root = join(work, 'store');
    const state = join(root, 'nix/var/nix');
    const added = await withStore(root, (s) => s.addText('late', 'registered during the collection', []));
    const info = await withStore(root, async (s) => (await s.queryPathInfo(added.path))!);
    symlinkSync(`/nix/store/${added.path.baseName}`, join(state, 'gcroots', 'late'));
    await withStore(root, async (s) => {
      s.db.invalidate(added.path); // files stay: as if the builder had just renamed its output in
      const result = await collectGarbage(s, {
        report: (_level, message) => {
          // Roots are read by now; the output's registration lands while the store is walked.
          if (message === 'deleting garbage...') s.db.register([{ info }]);
        },
      });
      expect(result.deleted.map((d) => d.baseName)).not.toContain(added.path.baseName);
      expect(s.db.isValid(added.path)).toBe(true);
    });
    expect(storeEntries(root)).toContain(added.path.baseName);
  });

  it('deletes referrers before references and frees exactly the sum of the file sizes', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const src = join(work, 'tree');
    mkdirSync(join(src, 'sub'), { recursive: true });
    writeFileSync(join(src, 'a'), Buffer.alloc(12345, 1));
    writeFileSync(join(src, 'sub', 'b'), Buffer.alloc(678, 2));
    symlinkSync('a-target', join(src, 'link'));
    const p = await withStore(root, async (s) => {
      const c = await s.addPath(src, { name: 'c' });
      const b = await s.addText('b', 'b'.repeat(1000), [c.path]);
      const a = await s.addText('a', 'a'.repeat(77), [b.path]);
      return { a, b, c };
    });
    const messages: string[] = [];
    const r = await withStore(root, (s) => collectGarbage(s, { report: (_l, m) => messages.push(m) }));
    const order = messages.filter((m) => m.startsWith('deleting \'')).map((m) => m.slice(10, -1));
    const names = [p.a, p.b, p.c].map((i) => `/nix/store/${i.path.baseName}`);
    expect(order).toEqual(names);
    expect(r.bytesFreed).toBe(12345 + 678 + 'a-target'.length + 1000 + 77);
    expect(storeEntries(root)).toEqual([]);
    expect(showMiB(r.bytesFreed)).toBe('0.01 MiB');
  });

  it('keeps the temp roots of a live process and drops those of a dead one', async () => {
    const root = join(tempDir(), 'store');
    await withStore(root, (s) => s.addText('garbage', 'g', []));
    const script = `const { openStore } = await import(${JSON.stringify(join(REPO_ROOT, 'dist/store/open.js'))});
      const s = await openStore(${JSON.stringify(root)});
      const i = await s.addText('held', 'held by a live process', []);
      console.log('ready ' + i.path.baseName);
      setInterval(() => {}, 1000);`;
    ensureBuilt();
    const child = await spawnReady(process.execPath, ['--input-type=module', '-e', script]);
    const held = storeEntries(root).find((n) => n.endsWith('-held'))!;
    const r1 = await withStore(root, (s) => collectGarbage(s));
    expect(r1.deleted.map((p) => p.name)).toEqual(['garbage']);
    expect(storeEntries(root)).toEqual([held]);
    await killAndWait(child);
    // The dead owner's file is still there (it could not clean up); GC sees it is unlocked.
    expect(readdirSync(join(root, 'nix/var/nix/temproots'))).toEqual([String(child.pid)]);
    const r2 = await withStore(root, (s) => collectGarbage(s));
    expect(r2.deleted.map((p) => p.name)).toEqual(['held']);
    expect(readdirSync(join(root, 'nix/var/nix/temproots'))).toEqual([]);
  });

  it('serves the roots socket while collecting: a path announced there survives', async () => {
    const root = join(tempDir(), 'store');
    await withStore(root, async (s) => {
      for (let i = 0; i < 600; i++) await s.addText(`p${i}`, `contents ${i}`, []);
    });
    // The last entry in directory order is the last one the collector reaches.
    const { opendirSync } = await import('node:fs');
    const { createConnection } = await import('node:net');
    const dir = opendirSync(join(root, 'nix/store'));
    let last = '';
    for (let e = dir.readSync(); e; e = dir.readSync()) last = e.name;
    dir.closeSync();
    let acked: Promise<string> | undefined;
    const r = await withStore(root, (s) =>
      collectGarbage(s, {
        report: (_l, m) => {
          if (m !== 'deleting garbage...') return;
          // What a real Nix client does when it cannot take gc.lock shared: send the path, await '1'.
          acked = new Promise((resolve, reject) => {
            const c = createConnection(join(root, 'nix/var/nix/gc-socket/socket'), () => c.write(`/nix/store/${last}\n`));
            c.once('data', (d: Buffer) => {
              resolve(d.toString());
              c.destroy();
            });
            c.once('error', reject);
          });
        },
      }),
    );
    expect(await acked).toBe('1');
    expect(r.deleted).toHaveLength(599);
    expect(storeEntries(root)).toEqual([last]);
    expect(existsSync(join(root, 'nix/var/nix/gc-socket/socket'))).toBe(false);
  });

  it('keeps paths a running process uses as its cwd or through an open file (runtime roots)', async () => {
    const root = join(tempDir(), 'store');
    const { cwdPath, fdPath, other } = await withStore(root, async (s) => {
      const dir = join(tempDir(), 'd');
      mkdirSync(dir);
      writeFileSync(join(dir, 'f'), 'x');
      return {
        cwdPath: await s.addPath(dir, { name: 'cwd-root' }),
        fdPath: await s.addText('fd-root', 'open me', []),
        other: await s.addText('other', 'o', []),
      };
    });
    const real = (p: StorePath) => join(root, 'nix/store', p.baseName);
    const c1 = await spawnReady('sh', ['-c', 'echo ready; exec sleep 600'], { cwd: real(cwdPath.path) });
    const c2 = await spawnReady('sh', ['-c', `exec 3<'${real(fdPath.path)}'; echo ready; exec sleep 600`]);
    const roots = await withStore(root, (s) => findRoots(s));
    expect(roots.get(`/nix/store/${cwdPath.path.baseName}`)).toContain(`/proc/${c1.pid}/cwd`);
    expect(roots.get(`/nix/store/${fdPath.path.baseName}`)).toContain(`/proc/${c2.pid}/fd/3`);
    const r = await withStore(root, (s) => collectGarbage(s));
    expect(r.deleted.map((p) => p.name)).toEqual([other.path.name]);
    await killAndWait(c1);
    await killAndWait(c2);
    const r2 = await withStore(root, (s) => collectGarbage(s));
    expect(r2.deleted.map((p) => p.name).sort()).toEqual(['cwd-root', 'fd-root']);
  });

  it('never aborts on junk: deletes stray files, dirs, free locks and unlocked tmp dirs, keeps held ones', async () => {
    const root = join(tempDir(), 'store');
    const g = await withStore(root, (s) => s.addText('garbage', 'g', []));
    const store = join(root, 'nix/store');
    writeFileSync(join(store, 'foo'), 'foo!');
    mkdirSync(join(store, 'junkdir', 'deep'), { recursive: true });
    writeFileSync(join(store, 'junkdir', 'deep', 'x'), 'xx');
    chmodSync(join(store, 'junkdir', 'deep'), 0o555);
    chmodSync(join(store, 'junkdir'), 0o555);
    symlinkSync('/nonexistent/target', join(store, 'dangling'));
    writeFileSync(join(store, 'free.lock'), '');
    writeFileSync(join(store, 'held.lock'), '');
    mkdirSync(join(store, 'tmp-1-1'));
    mkdirSync(join(store, 'tmp-2-2'));
    // Hold two locks the way their owners would (another open file description: flock conflicts).
    const heldFd = openSync(join(store, 'held.lock'), 'r');
    const tmpFd = openSync(join(store, 'tmp-2-2'), 'r');
    expect(tryLockFd(heldFd, 'exclusive')).toBe(true);
    expect(tryLockFd(tmpFd, 'exclusive')).toBe(true);
    try {
      const dead = await withStore(root, (s) => collectGarbage(s, { print: 'dead' }));
      expect(dead.paths!.map((p) => p.name)).toEqual(['garbage']);
      expect(dead.junk).toEqual(['/nix/store/dangling', '/nix/store/foo', '/nix/store/free.lock', '/nix/store/junkdir', '/nix/store/tmp-1-1']);
      expect(storeEntries(root)).toContain('foo'); // A dry run deletes nothing, junk included.
      const r = await withStore(root, (s) => collectGarbage(s));
      expect(r.deleted.map((p) => p.baseName)).toEqual([g.path.baseName]);
      expect(r.junk).toEqual(dead.junk);
      expect(r.bytesFreed).toBe(1 + 4 + 2 + '/nonexistent/target'.length);
      expect(storeEntries(root)).toEqual(['held.lock', 'tmp-2-2']);
    } finally {
      closeSync(heldFd);
      closeSync(tmpFd);
    }
  });

  it('stops once more than maxFreed bytes were freed, and a 0 limit collects nothing', async () => {
    const root = join(tempDir(), 'store');
    await withStore(root, async (s) => {
      for (const n of ['one', 'two', 'three']) await s.addText(n, n[0]!.repeat(100_000), []);
    });
    const none = await withStore(root, (s) => collectGarbage(s, { maxFreed: 0 }));
    expect(none.deleted).toEqual([]);
    const r = await withStore(root, (s) => collectGarbage(s, { maxFreed: 150_000 }));
    expect(r.deleted).toHaveLength(2);
    expect(r.bytesFreed).toBe(200_000);
    expect(storeEntries(root)).toHaveLength(1);
  });

  it('a rooted output keeps its .drv (keep-derivations); a rooted .drv does not keep its output (keep-outputs off)', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    const { addDerivationFromJson } = await import('../../src/store/derivation-add.js');
    const { hashPath } = await import('../../src/fs/hash-path.js');
    const json = { name: 'thing', outputs: { out: {} }, inputSrcs: [], inputDrvs: {}, system: 'x86_64-linux', builder: '/bin/sh', args: [], env: { name: 'thing', out: '', builder: '/bin/sh', system: 'x86_64-linux' } };
    const { drv, out } = await withStore(root, async (s) => {
      const drv = await addDerivationFromJson(s, JSON.stringify(json));
      const out = (await s.queryDerivationOutputs(drv)).get('out')!;
      writeFileSync(s.realPath(out), 'built');
      const { hash, narSize } = await hashPath(s.realPath(out));
      s.registerValidPaths([{ info: { path: out, narHash: hash, narSize, references: [], deriver: drv, ultimate: true, sigs: [] } }]);
      return { drv, out };
    });
    const gcroots = join(root, 'nix/var/nix/gcroots');
    symlinkSync(`/nix/store/${out.baseName}`, join(gcroots, 'out'));
    const live = await withStore(root, (s) => collectGarbage(s, { print: 'live' }));
    expect(live.paths!.map((p) => p.baseName).sort()).toEqual([drv.baseName, out.baseName].sort());
    expect((await withStore(root, (s) => collectGarbage(s))).deleted).toEqual([]);
    // With only the .drv rooted, the output is garbage.
    symlinkSync(`/nix/store/${drv.baseName}`, join(gcroots, 'drv'));
    const { unlinkSync } = await import('node:fs');
    unlinkSync(join(gcroots, 'out'));
    const r = await withStore(root, (s) => collectGarbage(s));
    expect(r.deleted.map((p) => p.baseName)).toEqual([out.baseName]);
    // And a .drv alone is deletable once nothing roots it.
    unlinkSync(join(gcroots, 'drv'));
    expect((await withStore(root, (s) => collectGarbage(s))).deleted.map((p) => p.baseName)).toEqual([drv.baseName]);
  });
});

describe('deletePaths()', () => {
  it('refuses a live path and then deletes nothing; deletes a dead closure; deletes an invalid path\'s leftovers', async () => {
    const root = join(tempDir(), 'store');
    const p = await withStore(root, async (s) => {
      const lib = await s.addText('lib', 'lib', []);
      const app = await s.addText('app', 'app', [lib.path]);
      const rooted = await s.addText('rooted', 'r', []);
      return { lib, app, rooted };
    });
    symlinkSync(`/nix/store/${p.rooted.path.baseName}`, join(root, 'nix/var/nix/gcroots', 'r'));
    const before = storeEntries(root);
    for (const paths of [[p.lib.path], [p.app.path, p.rooted.path]]) {
      const err = await withStore(root, (s) => deletePaths(s, paths)).catch((e: unknown) => e);
      expect(isStrataError(err, 'PATH_ALIVE')).toBe(true);
      expect((err as Error).message).toMatch(/^Cannot delete path '\/nix\/store\/.*' since it is still alive$/);
      expect(storeEntries(root)).toEqual(before);
    }
    const r = await withStore(root, (s) => deletePaths(s, [p.lib.path, p.app.path]));
    expect(r.deleted.map((x) => x.name)).toEqual(['app', 'lib']);
    expect(r.bytesFreed).toBe(6);
    expect(storeEntries(root)).toEqual([p.rooted.path.baseName]);
    // As Nix: deleting again succeeds, and what is left under an invalid path's name (an
    // interrupted add) is removed with it; nothing else is touched.
    const leftover = join(root, 'nix/store', p.lib.path.baseName);
    mkdirSync(join(leftover, 'sub'), { recursive: true });
    writeFileSync(join(leftover, 'sub', 'f'), 'half');
    const again = await withStore(root, (s) => deletePaths(s, [p.lib.path, p.app.path]));
    expect(again.deleted.map((x) => x.name)).toEqual(['app', 'lib']);
    expect(again.bytesFreed).toBe(4);
    expect(storeEntries(root)).toEqual([p.rooted.path.baseName]);
  });
});

describe('strata gc / delete (CLI)', () => {
  it('--print-live and --print-dead list without deleting; gc prints the summary Nix prints', async () => {
    const root = join(tempDir(), 'store');
    const p = await withStore(root, async (s) => ({
      live: await s.addText('live', 'l', []),
      dead: await s.addText('dead', 'd'.repeat(2048), []),
    }));
    symlinkSync(`/nix/store/${p.live.path.baseName}`, join(root, 'nix/var/nix/gcroots', 'l'));
    expect(await strataOk(['--store', root, 'gc', '--print-live'])).toBe(`/nix/store/${p.live.path.baseName}\n`);
    expect(await strataOk(['--store', root, 'gc', '--print-dead'])).toBe(`/nix/store/${p.dead.path.baseName}\n`);
    expect(await strataOk(['--store', root, 'gc', '--print-roots'])).toBe(`${join(root, 'nix/var/nix/gcroots', 'l')} -> /nix/store/${p.live.path.baseName}\n`);
    expect(storeEntries(root)).toHaveLength(2);
    const json = JSON.parse(await strataOk(['--store', root, '--json', 'gc', '--dry-run']));
    expect(json).toEqual({ dead: [`/nix/store/${p.dead.path.baseName}`] });
    ensureBuilt();
    const del = await runStrata(['--store', root, 'delete', `/nix/store/${p.live.path.baseName}`]);
    expect(del.code).toBe(1);
    expect(del.stderr).toContain('since it is still alive');
    const r = await runStrata(['--store', root, 'gc']);
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe('1 store paths deleted, 0.00 MiB freed\n');
    expect(r.stderr).toContain(`deleting '/nix/store/${p.dead.path.baseName}'`);
    expect(storeEntries(root)).toEqual([p.live.path.baseName]);
  });
});

describe('a read-only store (read-only=true) through the CLI', () => {
  it('refuses gc, delete and optimise and leaves every file as it was', async () => {
    const root = join(tempDir(), 'store');
    const p = await withStore(root, async (s) => {
      await s.addText('twin-1', 'same bytes', []);
      await s.addText('twin-2', 'same bytes', []);
      return s.addText('dead', 'd', []);
    });
    // Junk a collection would remove, and a stale indirect root it would unlink.
    writeFileSync(join(root, 'nix/store', `${p.path.baseName}.lock`), '');
    mkdirSync(join(root, 'nix/var/nix/gcroots/auto'), { recursive: true });
    symlinkSync('/nonexistent/result', join(root, 'nix/var/nix/gcroots/auto/stale'));
    const snapshot = (): string[] =>
      [
        ...readdirSync(join(root, 'nix/store')).map((n) => `${n}:${lstatSync(join(root, 'nix/store', n)).nlink}`),
        ...readdirSync(join(root, 'nix/var/nix'), { recursive: true }).map(String),
      ].sort();
    const before = snapshot();
    ensureBuilt();
    const ro = `${root}?read-only=true`;
    for (const args of [['gc'], ['gc', '--print-dead'], ['delete', `/nix/store/${p.path.baseName}`], ['optimise']]) {
      const r = await runStrata(['--store', ro, ...args]);
      expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 1, stderr: expect.stringMatching(/^error: Cannot .*: store '.*' is read-only\n$/) });
    }
    expect(snapshot()).toEqual(before);
  });
});

describe('gc while real Nix adds paths', () => {
  it('a real Nix adding a path while strata collects succeeds (through the roots socket) and keeps its path', async () => {
    const work = tempDir();
    const root = join(work, 'store');
    await withStore(root, async (s) => {
      for (let i = 0; i < 2000; i++) await s.addText(`p${i}`, `contents ${i}`, []);
    });
    writeFileSync(join(work, 'from-nix'), 'added by nix during gc');
    let nix: Promise<{ code: number | null; out: string }> | undefined;
    const r = await withStore(root, (s) =>
      collectGarbage(s, {
        report: (_l, m) => {
          if (m !== 'deleting garbage...') return;
          nix = new Promise((resolve) => {
            const c = spawn('nix-store', ['--store', root, '--add', join(work, 'from-nix')], { env: nixEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
            let out = '';
            c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
            c.stderr!.on('data', (d: Buffer) => (out += d.toString()));
            c.on('exit', (code) => resolve({ code, out }));
          });
        },
      }),
    );
    const added = await nix!;
    expect(added.code, added.out).toBe(0);
    const base = added.out.trim().split('\n').pop()!.slice('/nix/store/'.length);
    expect(r.deleted.map((p) => p.baseName)).not.toContain(base);
    expect(storeEntries(root)).toEqual([base]);
    expect(runNix('nix-store', ['--store', root, '--verify', '--check-contents']).code).toBe(0);
  });
});

describe('differential: strata gc vs nix-store --gc on copies of one store', () => {
  for (const optimised of [false, true]) {
    it(`same summary line and same remaining paths${optimised ? ' (optimised store)' : ''}`, async () => {
      const work = tempDir();
      const root = join(work, 'store');
      const src = join(work, 'tree');
      mkdirSync(src);
      writeFileSync(join(src, 'big'), Buffer.alloc(700_000, 7));
      writeFileSync(join(src, 'small'), 'hello');
      symlinkSync('big', join(src, 'alias'));
      const src2 = join(work, 'tree2');
      mkdirSync(src2);
      writeFileSync(join(src2, 'big'), Buffer.alloc(700_000, 7)); // Same bytes as tree/big.
      writeFileSync(join(src2, 'other'), Buffer.alloc(333_333, 3));
      const p = await withStore(root, async (s) => {
        const t = await s.addPath(src);
        const t2 = await s.addPath(src2);
        const keep = await s.addText('keep', 'kept', [t2.path]);
        const txt = await s.addText('txt', 'x'.repeat(150_000), [t.path]);
        return { t, t2, keep, txt };
      });
      symlinkSync(`/nix/store/${p.keep.path.baseName}`, join(root, 'nix/var/nix/gcroots', 'keep'));
      if (optimised) await strataOk(['--store', root, 'optimise']);
      const copy = join(work, 'copy');
      expect(runNix('cp', ['-a', root, copy]).code).toBe(0);
      ensureBuilt();
      const ours = await runStrata(['--store', root, 'gc']);
      const theirs = runNix('nix-store', ['--store', copy, '--gc']);
      expect(theirs.code).toBe(0);
      expect(ours.code).toBe(0);
      expect(ours.stdout.toString()).toBe(theirs.stdout);
      expect(ours.stdout.toString()).toMatch(/^2 store paths deleted, \d+\.\d\d MiB freed\n$/);
      expect(storeEntries(root)).toEqual(storeEntries(copy));
      expect(linkNames(root)).toEqual(linkNames(copy));
      if (optimised) expect(linkNames(root).length).toBeGreaterThan(0);
      const nixValid = runNix('nix-store', ['--store', root, '-q', '--requisites', `/nix/store/${p.keep.path.baseName}`]);
      expect(nixValid.code).toBe(0);
      const check = runNix('nix-store', ['--store', root, '--verify', '--check-contents']);
      expect(check.code).toBe(0);
      expect(lstatSync(join(root, 'nix/store', p.t2.path.baseName)).isDirectory()).toBe(true);
      expect(readFileSync(join(root, 'nix/store', p.keep.path.baseName), 'utf8')).toBe('kept');
    });
  }
});
