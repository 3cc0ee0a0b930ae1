import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ensureBuilt, runStrata } from '../support/cli.js';
import { loadVector } from '../support/vectors.js';
import { buildTree } from '../support/tree.js';

const nar = loadVector('nar.json');
let tmp: string;

beforeAll(() => {
  ensureBuilt();
  tmp = mkdtempSync(join(tmpdir(), 'strata-nar-cli-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));


describe('strata dump / restore / hash', () => {
  const tree = nar.cases[0];
  const file = nar.cases[1];
  it('strata dump PATH writes nix-store --dump bytes', async () => {
    buildTree(join(tmp, 'tree1'), tree.root);
    const r = await runStrata(['dump', join(tmp, 'tree1')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.toString('base64')).toBe(tree.nar_b64);
  });
  it('strata restore DIR reads a NAR from stdin; --json reports hash and size', async () => {
    const r = await runStrata(['--json', 'restore', join(tmp, 'restored')], { input: Buffer.from(tree.nar_b64, 'base64') });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout.toString())).toEqual({ narHash: tree.nix_hash_path.sha256_sri, narSize: tree.nar_size });
    const again = await runStrata(['dump', join(tmp, 'restored')]);
    expect(again.stdout.toString('base64')).toBe(tree.nar_b64);
  });
  it('strata restore rejects a bad NAR with one line on stderr, exit 1, leaving nothing', async () => {
    const bad = Buffer.from(tree.nar_b64, 'base64').subarray(0, 500);
    const r = await runStrata(['restore', join(tmp, 'bad')], { input: bad });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('error: Cannot parse NAR: unexpected end of archive at byte 500\n');
    expect(readdirSync(tmp)).not.toContain('bad');
  });
  it('strata hash path prints like nix hash path: SRI by default, --base16/--base32/--sri, --type', async () => {
    const p = join(tmp, 'tree1');
    expect((await runStrata(['hash', 'path', p])).stdout.toString()).toBe(`${tree.nix_hash_path.sha256_sri}\n`);
    expect((await runStrata(['hash', 'path', '--base32', p])).stdout.toString()).toBe(`${tree.nix_hash_path.sha256_nix32}\n`);
    for (const t of ['md5', 'sha1', 'sha256', 'sha512']) {
      expect((await runStrata(['hash', 'path', '--type', t, '--base16', p])).stdout.toString()).toBe(`${tree.nix_hash_path[t]}\n`);
    }
    // As in Nix 2.8, the last format flag wins.
    expect((await runStrata(['hash', 'path', '--sri', '--base16', p])).stdout.toString()).toBe(`${tree.nix_hash_path.sha256}\n`);
    expect((await runStrata(['hash', 'path', '--base16', '--sri', p])).stdout.toString()).toBe(`${tree.nix_hash_path.sha256_sri}\n`);
  });
  it('strata hash file hashes plain contents', async () => {
    buildTree(join(tmp, 'hello.txt'), file.root);
    const r = await runStrata(['hash', 'file', '--type', 'sha512', '--base16', join(tmp, 'hello.txt'), join(tmp, 'hello.txt')]);
    expect(r.stdout.toString()).toBe(`${file.flat_hashes_hex.sha512}\n${file.flat_hashes_hex.sha512}\n`);
  });
  it('bad usage exits 2; a missing path exits 1 with one line', async () => {
    const bad = await runStrata(['hash', 'path', '--type', 'crc32', tmp]);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    // A usage error commander finds: its line and a pointer to the help, not the whole help.
    for (const args of [['hash', 'path'], ['hash', 'path', '--bogus', tmp], ['frob']]) {
      const r = await runStrata(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.toString(), args.join(' ')).toMatch(/^error: [^\n]+\nTry 'strata --help' or 'strata COMMAND --help' for more information\.\n$/);
    }
    const missing = await runStrata(['hash', 'path', join(tmp, 'nope')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^error: .*nope.*\n$/);
    expect(missing.stderr.split('\n')).toHaveLength(2);
  });
});
