/**
 * Hostile input through the CLI (issue 8 §4): crafted NARs, narinfos, `.drv` files, store URIs,
 * spec files, HTTP responses and URLs sent to `strata serve`. Each is rejected with exit 1 and
 * exactly one line on stderr, and nothing is written: the store's objects and rows are the same
 * before and after.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';

import { Hash, nix32Encode } from '../../src/core/hash.js';
import { str, u64 } from '../../src/core/nar/format.js';
import { hashPath } from '../../src/fs/hash-path.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';
import { ensureBuilt, ROOT, runStrata } from '../support/cli.js';
import { hashTree } from '../support/layered.js';
import { tempDir } from '../support/tmp.js';
import { TIMEOUT, record } from './_torture.js';

const MAGIC = str('nix-archive-1');
const nar = (...parts: Buffer[]): Buffer => Buffer.concat([MAGIC, ...parts]);
const s = (x: string | Buffer): Buffer => str(x);
const file = (contents: string): Buffer[] => [
  s('('),
  s('type'),
  s('regular'),
  s('contents'),
  s(contents),
  s(')'),
];
const dirOf = (...entries: Array<[string | Buffer, Buffer[]]>): Buffer[] => [
  s('('),
  s('type'),
  s('directory'),
  ...entries.flatMap(([n, node]) => [
    s('entry'),
    s('('),
    s('name'),
    s(n),
    s('node'),
    ...node,
    s(')'),
  ]),
  s(')'),
];
const symlink = (t: string): Buffer[] => [
  s('('),
  s('type'),
  s('symlink'),
  s('target'),
  s(t),
  s(')'),
];

function nested(depth: number): Buffer[] {
  let node = file('deep');
  for (let i = 0; i < depth; i++) node = dirOf(['d', node]);
  return node;
}

const hostileNars: Array<[string, Buffer]> = [
  ['.. as a name', nar(...dirOf(['..', file('x')]))],
  ['/ in a name', nar(...dirOf(['a/b', file('x')]))],
  ['NUL in a name', nar(...dirOf([Buffer.from('a\0b'), file('x')]))],
  [
    'a symlink, then a directory through it',
    nar(...dirOf(['a', symlink('/etc')], ['a', dirOf(['passwd', file('owned')])])),
  ],
  ['duplicate entries', nar(...dirOf(['a', file('1')], ['a', file('2')]))],
  ['unsorted entries', nar(...dirOf(['b', file('1')], ['a', file('2')]))],
  [
    'a 2^63 length',
    Buffer.concat([
      nar(s('('), s('type'), s('regular'), s('contents')),
      u64(0),
      Buffer.from([0, 0, 0, 0, 0, 0, 0, 0x80]),
    ]).subarray(0, -16),
  ],
  ['truncation', nar(...file('hello world')).subarray(0, 70)],
  ['trailing data', Buffer.concat([nar(...file('x')), Buffer.alloc(8)])],
  ['deep nesting', nar(...nested(400))],
  ['bad magic', Buffer.concat([s('nix-archive-2'), ...file('x')])],
];
// The 2^63 length case: a regular file whose length field is 2^63.
{
  const head = nar(s('('), s('type'), s('regular'), s('contents'));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(2n ** 63n);
  hostileNars[6] = ['a 2^63 length', Buffer.concat([head, len, Buffer.from('x'.repeat(8))])];
}

/** Objects and rows of a store: what "nothing written" compares. */
function storeState(root: string): string {
  const db = new Database(join(root, 'nix', 'var', 'nix', 'db', 'db.sqlite'), { readonly: true });
  try {
    const rows = JSON.stringify([
      db.prepare('SELECT * FROM ValidPaths ORDER BY id').all(),
      db.prepare('SELECT * FROM Refs ORDER BY referrer, reference').all(),
    ]);
    // Each entry of the store dir, by name (the dir's own mtime moves when a staging dir comes and goes).
    const real = join(root, 'nix', 'store');
    const objects = readdirSync(real)
      .sort()
      .map((e) => `${e}=${hashTree(join(real, e))}`);
    return `${Hash.of('sha256', objects.join('\n')).toBase16()}:${Hash.of('sha256', rows).toBase16()}`;
  } finally {
    db.close();
  }
}

async function freshStore(): Promise<string> {
  const root = tempDir();
  const r = await runStrata(['--store', root, 'path-info', '--all']);
  expect(r.code, r.stderr).toBe(0);
  return root;
}

let rejected = 0;
/** Runs strata and expects a one-line rejection with exit 1 and an unchanged store. */
async function expectRejected(root: string, args: string[], what: string): Promise<string> {
  const before = storeState(root);
  const r = await runStrata(['--store', root, ...args]);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(r.code, `${what}: ${r.stderr}`).toBe(1);
  expect(lines, `${what}: stderr should be one line`).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: /);
  expect(r.stderr).not.toMatch(/database is locked|at .*\.js:\d+/);
  expect(storeState(root), `${what}: the store changed`).toBe(before);
  rejected++;
  return lines[0]!;
}

/** A file:// cache serving `bytes` as the NAR of a fresh path; `edit` may change the narinfo. */
function cacheWith(
  dir: string,
  bytes: Buffer,
  name: string,
  edit: (ni: string) => string = (x) => x,
  compression = 'none',
): string {
  mkdirSync(join(dir, 'nar'), { recursive: true });
  writeFileSync(
    join(dir, 'nix-cache-info'),
    'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n',
  );
  const hashPart = nix32Encode(randomBytes(20));
  const path = `/nix/store/${hashPart}-${name}`;
  const fileHash = Hash.of('sha256', bytes);
  const url = `nar/${fileHash.toNix32()}.nar${compression === 'xz' ? '.xz' : ''}`;
  writeFileSync(join(dir, url), bytes);
  const ni = `StorePath: ${path}\nURL: ${url}\nCompression: ${compression}\nFileHash: ${fileHash.toString()}\nFileSize: ${bytes.length}\nNarHash: ${fileHash.toString()}\nNarSize: ${bytes.length}\nReferences: \n`;
  writeFileSync(join(dir, `${hashPart}.narinfo`), edit(ni));
  return path;
}

describe(
  'torture: hostile input is refused with one line and nothing written',
  { timeout: TIMEOUT },
  () => {
    ensureBuilt();

    it('hostile NARs arriving through strata copy from a cache', async () => {
      const root = await freshStore();
      for (const [what, bytes] of hostileNars) {
        const cache = tempDir();
        const path = cacheWith(cache, bytes, 'hostile');
        await expectRejected(
          root,
          ['--no-require-sigs', 'copy', '--from', `file://${cache}`, '--to', root, path],
          `NAR with ${what}`,
        );
      }
    });

    it('hostile narinfos', async () => {
      const root = await freshStore();
      const good = nar(...file('fine'));
      const edits: Array<[string, (ni: string) => string]> = [
        ['missing NarHash', (ni) => ni.replace(/^NarHash: .*\n/m, '')],
        ['missing StorePath', (ni) => ni.replace(/^StorePath: .*\n/m, '')],
        ['missing URL', (ni) => ni.replace(/^URL: .*\n/m, '')],
        [
          'wrong StorePath',
          (ni) =>
            ni.replace(
              /^StorePath: \/nix\/store\/\w+/m,
              `StorePath: /nix/store/${nix32Encode(randomBytes(20))}`,
            ),
        ],
        [
          'StorePath outside the store',
          (ni) => ni.replace(/^StorePath: \/nix\/store/m, 'StorePath: /etc/../nix/store'),
        ],
        ['bad NarHash', (ni) => ni.replace(/^NarHash: sha256:\w+/m, 'NarHash: sha256:zzzz')],
        [
          'NarHash of other bytes',
          (ni) =>
            ni.replace(
              /^NarHash: sha256:\w+/m,
              `NarHash: ${Hash.of('sha256', 'other').toString()}`,
            ),
        ],
        ['wrong NarSize', (ni) => ni.replace(/^NarSize: \d+/m, 'NarSize: 7')],
        ['huge NarSize', (ni) => ni.replace(/^NarSize: \d+/m, 'NarSize: 99999999999999999999999')],
        [
          'oversized value',
          (ni) => ni.replace(/^References: /m, `System: ${'x'.repeat(70_000)}\nReferences: `),
        ],
        ['CRLF line ends', (ni) => ni.replace(/\n/g, '\r\n')],
        ['unknown compression', (ni) => ni.replace(/^Compression: none/m, 'Compression: lzma9')],
        ['URL outside the cache', (ni) => ni.replace(/^URL: .*/m, 'URL: ../../../../etc/passwd')],
        [
          'a reference that is not a store path',
          (ni) => ni.replace(/^References: /m, 'References: ../x'),
        ],
        ['a bad Sig line', (ni) => `${ni}Sig: nope\n`],
      ];
      for (const [what, edit] of edits) {
        const cache = tempDir();
        const path = cacheWith(cache, good, 'fine', edit);
        await expectRejected(
          root,
          ['--no-require-sigs', 'copy', '--from', `file://${cache}`, '--to', root, path],
          `narinfo with ${what}`,
        );
      }
      // Garbage behind a declared compression.
      const cache = tempDir();
      const path = cacheWith(cache, randomBytes(300), 'garbage', (ni) => ni, 'xz');
      await expectRejected(
        root,
        ['--no-require-sigs', 'copy', '--from', `file://${cache}`, '--to', root, path],
        'garbage xz stream',
      );
    });

    it('hostile .drv files: bad escapes, cycles, outputs that do not match their hash', async () => {
      const root = await freshStore();
      const drvs: Array<[string, (self: string) => string]> = [
        [
          'a bad escape (an escaped quote runs the string to the end)',
          () =>
            `Derive([("out","/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo \\"],[("builder","/bin/sh")])`,
        ],
        [
          'a cycle (it needs itself)',
          (self) =>
            `Derive([("out","/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-cyc","","")],[("${self}",["out"])],[],"x86_64-linux","/bin/sh",["-c","true"],[("builder","/bin/sh"),("name","cyc"),("out","/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-cyc"),("system","x86_64-linux")])`,
        ],
        [
          'an output path that does not match its hash',
          () =>
            'Derive([("out","/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo hi > $out"],[("builder","/bin/sh"),("name","simple"),("out","/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple"),("system","x86_64-linux")])',
        ],
        [
          'trailing bytes',
          () =>
            'Derive([("out","/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-x","","")],[],[],"x","/bin/sh",[],[])\n',
        ],
      ];
      for (const [what, text] of drvs) {
        const cache = tempDir();
        const hashPart = nix32Encode(randomBytes(20));
        const self = `/nix/store/${hashPart}-bad.drv`;
        const body = text(self);
        const bytes = nar(...file(body));
        // The cache offers a .drv (as text) under a path it names itself; copying it is allowed, realising it is not.
        mkdirSync(join(cache, 'nar'), { recursive: true });
        writeFileSync(join(cache, 'nix-cache-info'), 'StoreDir: /nix/store\n');
        const fh = Hash.of('sha256', bytes);
        writeFileSync(join(cache, 'nar', `${fh.toNix32()}.nar`), bytes);
        writeFileSync(
          join(cache, `${hashPart}.narinfo`),
          `StorePath: ${self}\nURL: nar/${fh.toNix32()}.nar\nCompression: none\nNarHash: ${fh.toString()}\nNarSize: ${bytes.length}\nReferences: ${body.includes(self) ? `${hashPart}-bad.drv` : ''}\n`,
        );
        // As in Nix, a .drv is checked when it is registered: the copy itself is refused.
        await expectRejected(
          root,
          ['--no-require-sigs', 'copy', '--from', `file://${cache}`, '--to', root, self],
          `.drv with ${what}`,
        );
      }
      // A cycle that got into a store some other way (registered without checks) must not hang realise.
      const hashPart = nix32Encode(randomBytes(20));
      const self = `/nix/store/${hashPart}-cyc.drv`;
      writeFileSync(join(root, 'nix', 'store', `${hashPart}-cyc.drv`), drvs[1]![1](self));
      const store = (await openStore(root)) as LocalStore;
      try {
        const info = await hashPath(join(root, 'nix', 'store', `${hashPart}-cyc.drv`));
        const p = store.storeDir.parse(self);
        await store.registerValidPaths([
          {
            info: {
              path: p,
              narHash: info.hash,
              narSize: info.narSize,
              references: [p],
              ultimate: false,
              sigs: [],
            },
          },
        ]);
      } finally {
        await store.close();
      }
      const line = await expectRejected(root, ['realise', self], '.drv whose inputs form a cycle');
      expect(line).toMatch(/cycle/);
    });

    it('hostile store URIs', async () => {
      const root = await freshStore();
      for (const uri of [
        'ftp://x',
        'file://relative',
        'local?root=relative',
        `local?root=${root}&bogus=1`,
        'layered://',
        '',
        'x'.repeat(5000),
        'local?root=%zz',
        `${root}?read-only=maybe`,
        'http://',
        's3://A_B',
        `local?root=${root}&root=/tmp`,
        'file://\n/x',
      ])
        await expectRejected(
          root,
          ['--store', uri, 'path-info', '--all'],
          `store URI ${JSON.stringify(uri.slice(0, 40))}`,
        );
    });

    it('hostile spec files for strata env', async () => {
      const root = await freshStore();
      const work = tempDir();
      const specs: Array<[string, string]> = [
        ['a.nix', '{ pkgs }: { deps = [ (import /etc/passwd) ]; }'],
        ['b.nix', 'with import <nixpkgs> {}; { deps = [ hello ]; }'],
        ['c.nix', '{ pkgs }: { deps = [ /nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple ]; }'],
        ['d.json', '{"deps": [1, 2]}'],
        ['e.json', '{"deps": ["a"], "deps": ["b"]}'],
        ['f.toml', 'deps = ["a"\n'],
        ['g.json', `{"deps": ["${'['.repeat(10_000)}"]}`],
        ['h.nix', `{ pkgs }: { deps = [ ${'['.repeat(100_000)} ]; }`],
        ['i.json', '{"deps": ["../../../etc/passwd"]}'],
        ['j.nix', '{ pkgs }: { deps = [ "${builtins.readFile /etc/shadow}" ]; }'],
      ];
      for (const [name, text] of specs) {
        writeFileSync(join(work, name), text);
        await expectRejected(root, ['env', join(work, name), '--no-cache'], `spec ${name}`);
      }
    });

    it('hostile HTTP responses: wrong lengths, slow drip, garbage compression', async () => {
      const root = await freshStore();
      const good = nar(...file('served'));
      const fh = Hash.of('sha256', good);
      const hashPart = nix32Encode(randomBytes(20));
      const path = `/nix/store/${hashPart}-web`;
      let mode = '';
      const server: Server = createServer((req, res) => {
        if (req.url === '/nix-cache-info') return void res.end('StoreDir: /nix/store\n');
        if (req.url === `/${hashPart}.narinfo`) {
          const compression = mode === 'garbage' ? 'xz' : 'none';
          return void res.end(
            `StorePath: ${path}\nURL: nar/x.nar\nCompression: ${compression}\nNarHash: ${fh.toString()}\nNarSize: ${good.length}\nReferences: \n`,
          );
        }
        if (req.url === '/nar/x.nar') {
          if (mode === 'short') {
            res.writeHead(200, { 'content-length': String(good.length + 100) });
            res.write(good);
            return void setTimeout(() => res.socket?.destroy(), 50);
          }
          if (mode === 'long') {
            res.writeHead(200, { 'content-length': String(good.length - 8) });
            return void res.end(good.subarray(0, good.length - 8));
          }
          if (mode === 'garbage') return void res.end(randomBytes(500));
          if (mode === 'drip') {
            res.writeHead(200, { 'content-length': String(good.length) });
            let i = 0;
            const t = setInterval(() => {
              if (res.destroyed || i >= good.length) return clearInterval(t);
              res.write(good.subarray(i, ++i));
            }, 1500);
            res.on('close', () => clearInterval(t));
            return;
          }
        }
        res.statusCode = 404;
        res.end();
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const port = (server.address() as { port: number }).port;
      try {
        for (mode of ['short', 'long', 'garbage', 'drip']) {
          await expectRejected(
            root,
            [
              '--no-require-sigs',
              'copy',
              '--from',
              `http://127.0.0.1:${port}?timeout=1&retries=0`,
              '--to',
              root,
              path,
            ],
            `HTTP ${mode}`,
          );
        }
      } finally {
        server.closeAllConnections();
        await new Promise((r) => server.close(r));
      }
    });

    it('hostile URLs sent to strata serve: traversal, encoded slashes, huge headers', async () => {
      const root = await freshStore();
      const before = storeState(root);
      const child = spawn(
        process.execPath,
        [
          join(ROOT, 'bin', 'strata'),
          '--store',
          root,
          'serve',
          '--listen',
          '127.0.0.1:0',
          '--quiet',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      try {
        const url = await new Promise<string>((resolve, reject) => {
          child.stdout.once('data', (c: Buffer) => resolve(c.toString().trim()));
          child.once('exit', (code) => reject(new Error(`serve exited ${code}`)));
        });
        const port = Number(new URL(url).port);
        const raw = (request: string): Promise<string> =>
          new Promise((resolve) => {
            const sock = connect(port, '127.0.0.1', () => sock.end(request));
            let out = '';
            sock.on('data', (c) => (out += c.toString('latin1')));
            sock.on('close', () => resolve(out));
            sock.on('error', () => resolve(out));
          });
        const targets = [
          '/../../../etc/passwd',
          '/nar/..%2F..%2F..%2Fetc%2Fpasswd',
          '/%2e%2e/%2e%2e/etc/passwd',
          '/nar/%2e%2e%2fdb.sqlite',
          '//etc/passwd',
          '/nix/var/nix/db/db.sqlite',
          '/nar/\u0000.nar',
          `/${'a'.repeat(100_000)}.narinfo`,
          '/log/../../etc/shadow',
        ];
        for (const t of targets) {
          const res = await raw(`GET ${t} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
          const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(res)?.[1] ?? 0);
          expect(status, `${t}: ${res.slice(0, 80)}`).toBeGreaterThanOrEqual(400);
          expect(status).toBeLessThan(500);
          expect(res).not.toMatch(/root:.*:0:0:|SQLite format/);
          rejected++;
        }
        const huge = await raw(
          `GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(200_000)}\r\nConnection: close\r\n\r\n`,
        );
        expect(Number(/^HTTP\/1\.1 (\d{3})/.exec(huge)?.[1] ?? 431)).toBeGreaterThanOrEqual(400);
        const upload = await raw(
          `PUT /${nix32Encode(randomBytes(20))}.narinfo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd`,
        );
        expect(Number(/^HTTP\/1\.1 (\d{3})/.exec(upload)?.[1])).toBeGreaterThanOrEqual(400);
        // Still serving after all that.
        const ok = await raw(
          'GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
        );
        expect(ok).toMatch(/^HTTP\/1\.1 200/);
        expect(ok).toContain('StoreDir: /nix/store');
      } finally {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('close', r));
      }
      expect(storeState(root)).toBe(before);
      record('hostile input (CLI, serve)', { inputs: rejected });
    });
  },
);
