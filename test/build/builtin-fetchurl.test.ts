/**
 * `builtin:fetchurl` derivations, as real `nix-instantiate` makes them from
 * `import <nix/fetchurl.nix> { … }`: strata builds them in-process (no builder to exec) and the
 * results match real Nix 2.8's `nix-store -r` of the same .drv (run in a throw-away /nix);
 * failing downloads give one clear error naming the URL and leave the store unchanged.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { realise } from '../../src/build/index.js';
import type { StorePath } from '../../src/core/store-path.js';
import { haveNix, nixEnv, nixInPrivateNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { instantiate, openChroot, snapshot } from './helpers.js';

const isRoot = process.getuid?.() === 0;

interface Row {
  path: string;
  narHash: string;
  narSize: number;
  references: string[];
  ca?: string;
  deriver?: string;
}

const pick = (r: Row): Row => ({
  path: r.path,
  narHash: r.narHash,
  narSize: r.narSize,
  references: r.references,
  ca: r.ca,
  deriver: r.deriver,
});

describe.skipIf(!isRoot || !haveNix())('builtin:fetchurl', () => {
  let data: string;
  let server: Server;
  let base: string;
  /** Requests seen by the server, for the retry test. */
  const hits = new Map<string, number>();

  const hashOf = (args: string[]): string => {
    const r = runNix('nix', ['hash', ...args]);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim();
  };

  beforeAll(async () => {
    // Not tempDir(): that is removed after each test, this serves them all.
    data = mkdtempSync(join(tmpdir(), 'strata-fetchurl-'));
    writeFileSync(join(data, 'f.txt'), 'hello world\n');
    writeFileSync(join(data, 'empty'), '');
    const tree = join(data, 'tree');
    mkdirSync(join(tree, 'sub'), { recursive: true });
    writeFileSync(join(tree, 'run.sh'), '#!/bin/sh\necho hi\n');
    chmodSync(join(tree, 'run.sh'), 0o755);
    symlinkSync('run.sh', join(tree, 'link'));
    writeFileSync(join(tree, 'sub', 'empty'), '');
    const dump = spawnSync('nix-store', ['--dump', tree], { env: nixEnv() });
    expect(dump.status).toBe(0);
    writeFileSync(join(data, 'tree.nar'), dump.stdout);
    expect(spawnSync('xz', ['-k', join(data, 'tree.nar')]).status).toBe(0);
    server = createServer((req, res) => {
      const url = req.url ?? '/';
      hits.set(url, (hits.get(url) ?? 0) + 1);
      if (url === '/flaky' && hits.get(url) === 1) {
        res.writeHead(503);
        res.end('busy');
      } else if (url === '/redirect') {
        res.writeHead(302, { location: '/f.txt' });
        res.end();
      } else if (url === '/stall') {
        // Headers and a few bytes, then nothing: a server that stalls mid-body.
        res.writeHead(200, { 'content-length': '1000' });
        res.write('hello');
      } else if (url === '/f.txt' || url === '/flaky') {
        res.end('hello world\n');
      } else {
        res.writeHead(404, 'Not Found');
        res.end('no');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    rmSync(data, { recursive: true, force: true });
  });

  /** The fetchurl calls, by attribute, as a Nix file. */
  function nixFile(calls: Record<string, string>): string {
    const f = join(tempDir(), 't.nix');
    const body = Object.entries(calls)
      .map(([k, v]) => `  ${k} = import <nix/fetchurl.nix> ${v};`)
      .join('\n');
    writeFileSync(f, `{\n${body}\n}\n`);
    return f;
  }

  async function strataRows(root: string, drvs: string[]): Promise<Row[]> {
    const store = await openChroot(root);
    try {
      const paths = drvs.map((d) => store.storeDir.parse(d));
      const results = await realise(store, paths);
      for (const r of results) expect(r.error).toBeUndefined();
      const rows: Row[] = [];
      for (const d of paths) {
        for (const o of (await store.queryDerivationOutputs(d)).values()) {
          const info = (await store.queryPathInfo(o))!;
          rows.push({
            path: store.storeDir.print(info.path),
            narHash: info.narHash.toSri(),
            narSize: info.narSize,
            references: info.references.map((p) => store.storeDir.print(p)),
            ca: info.ca,
            deriver: info.deriver && store.storeDir.print(info.deriver),
          });
        }
      }
      return rows;
    } finally {
      await store.close();
    }
  }

  async function nixRows(file: string): Promise<Row[]> {
    const r = await nixInPrivateNix(
      tempDir(),
      `drvs=$(nix-instantiate ${file}) && nix-store -r $drvs >/dev/null && nix path-info --json $(nix-store -q --outputs $drvs)`,
    );
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as Row[]).map(pick);
  }

  it('gives the output paths, NAR hashes and registrations real Nix 2.8 gives', async () => {
    const f = join(data, 'f.txt');
    const narHash = hashOf(['file', '--type', 'sha256', '--base32', join(data, 'tree.nar')]);
    const file = nixFile({
      flat: `{ url = "file://${f}"; sha256 = "${hashOf(['file', '--type', 'sha256', '--base32', f])}"; }`,
      sri: `{ url = "file://${f}"; hash = "${hashOf(['file', f])}"; name = "sri"; }`,
      sha512: `{ url = "file://${f}"; sha512 = "${hashOf(['file', '--type', 'sha512', '--base64', f])}"; name = "s512"; }`,
      md5: `{ url = "file://${f}"; md5 = "${hashOf(['file', '--type', 'md5', '--base16', f])}"; name = "m5"; }`,
      empty: `{ url = "file://${join(data, 'empty')}"; sha256 = "${hashOf(['file', '--type', 'sha256', join(data, 'empty')])}"; }`,
      exe: `{ url = "file://${join(data, 'tree', 'run.sh')}"; sha256 = "${hashOf(['path', '--type', 'sha256', join(data, 'tree', 'run.sh')])}"; executable = true; }`,
      unpack: `{ url = "file://${join(data, 'tree.nar')}"; sha256 = "${narHash}"; unpack = true; name = "xyzzy"; }`,
      unpackXz: `{ url = "file://${join(data, 'tree.nar.xz')}"; sha256 = "${narHash}"; unpack = true; name = "xyzzy-xz"; }`,
      http: `{ url = "${base}/f.txt"; sha256 = "${hashOf(['file', '--type', 'sha256', f])}"; name = "via-http"; }`,
      redirect: `{ url = "${base}/redirect"; sha256 = "${hashOf(['file', '--type', 'sha256', f])}"; }`,
    });
    const { root, drvs } = instantiate(file);
    const ours = await strataRows(root, drvs);
    const theirs = await nixRows(file);
    const byPath = (a: Row, b: Row): number => (a.path < b.path ? -1 : 1);
    expect(ours.sort(byPath)).toEqual(theirs.sort(byPath));
    expect(ours).toHaveLength(10);
    // The bytes too: the store's files are what real Nix dumps.
    const store = await openChroot(root);
    try {
      for (const row of ours) {
        const p = store.storeDir.parse(row.path);
        const dumped = spawnSync('nix-store', ['--dump', store.realPath(p)], { env: nixEnv() });
        expect(dumped.status).toBe(0);
        expect(`sha256-${createHash('sha256').update(dumped.stdout).digest('base64')}`).toBe(row.narHash);
      }
    } finally {
      await store.close();
    }
  }, 120_000);

  it('retries a transient HTTP failure, as Nix does', async () => {
    const f = join(data, 'f.txt');
    const { root, drvs } = instantiate(
      nixFile({ flaky: `{ url = "${base}/flaky"; sha256 = "${hashOf(['file', '--type', 'sha256', f])}"; }` }),
    );
    const rows = await strataRows(root, drvs);
    expect(rows).toHaveLength(1);
    expect(hits.get('/flaky')).toBe(2);
  });

  async function failure(call: string): Promise<{ error: Error; drv: StorePath; root: string }> {
    const { root, drvs } = instantiate(nixFile({ x: call }));
    const store = await openChroot(root);
    try {
      const drv = store.storeDir.parse(drvs[0]!);
      const before = await snapshot(store);
      const [r] = await realise(store, [drv]);
      expect(r!.outputs).toBeUndefined();
      expect(await snapshot(store)).toEqual(before);
      return { error: r!.error!, drv, root };
    } finally {
      await store.close();
    }
  }

  const H = '0ix4jahrkll5zg01wandq78jw3ab30q4nscph67rniqg5x7r0j59';

  it('a missing file:// file fails with BUILD_FAILED naming the URL; nothing becomes valid', async () => {
    const url = `file://${join(data, 'nope.txt')}`;
    const { error, drv } = await failure(`{ url = "${url}"; sha256 = "${H}"; }`);
    expect((error as { code?: string }).code).toBe('BUILD_FAILED');
    expect(error.message).toBe(
      `Cannot build '/nix/store/${drv.baseName}': builtin:fetchurl failed: unable to download '${url}': Couldn't read a file:// file (37)`,
    );
  });

  it('an HTTP 404 fails at once with BUILD_FAILED naming the URL and the status', async () => {
    const url = `${base}/missing`;
    const { error } = await failure(`{ url = "${url}"; sha256 = "${H}"; }`);
    expect((error as { code?: string }).code).toBe('BUILD_FAILED');
    expect(error.message).toContain(`unable to download '${url}': HTTP error 404 ('Not Found')`);
    expect(hits.get('/missing')).toBe(1);
  });

  it('a download with the wrong hash fails with HASH_MISMATCH and registers nothing', async () => {
    const { error } = await failure(`{ url = "file://${join(data, 'f.txt')}"; sha256 = "${H.replace('0', '1')}"; }`);
    expect((error as { code?: string }).code, error.message).toBe('HASH_MISMATCH');
  });

  it('an interrupted realise drops a download from a stalled server at once; nothing becomes valid', async () => {
    const { root, drvs } = instantiate(nixFile({ x: `{ url = "${base}/stall"; sha256 = "${H}"; }` }));
    const store = await openChroot(root);
    try {
      const drv = store.storeDir.parse(drvs[0]!);
      const before = await snapshot(store);
      const interrupt = new AbortController();
      const started = Date.now();
      setTimeout(() => interrupt.abort(), 500);
      const [r] = await realise(store, [drv], { signal: interrupt.signal });
      expect(Date.now() - started, 'the stalled body does not hold the run').toBeLessThan(10_000);
      expect(r!.outputs).toBeUndefined();
      expect(r!.error).toBeDefined();
      expect(await snapshot(store)).toEqual(before);
    } finally {
      await store.close();
    }
  });

  it('a NAR that is not one fails unpacking and leaves nothing behind', async () => {
    const { error } = await failure(
      `{ url = "file://${join(data, 'f.txt')}"; sha256 = "${H}"; unpack = true; name = "bad-nar"; }`,
    );
    expect((error as { code?: string }).code).toBe('BUILD_FAILED');
    expect(error.message).toContain('builtin:fetchurl failed');
  });
});
