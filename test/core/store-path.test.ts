import { describe, expect, it } from 'vitest';

import { Hash } from '../../src/core/hash.js';
import { StoreDir, StorePath } from '../../src/core/store-path.js';
import { loadVector } from '../support/vectors.js';

const names = loadVector('store-path-names.json');
const texts = loadVector('text-paths.json');

describe('store path names as Nix 2.8 judges them (store-path-names.json)', () => {
  for (const c of names.cases) {
    it(`${JSON.stringify(c.name).slice(0, 40)} is ${c.accepted_by_nix_2_8 ? 'accepted' : 'rejected'}`, () => {
      const dir = new StoreDir();
      const contents = Hash.of('sha256', 'x');
      if (c.accepted_by_nix_2_8) {
        expect(dir.print(dir.makeTextPath(c.name, contents))).toBe(c.path);
        expect(dir.parse(c.path).name).toBe(c.name);
      } else {
        expect(() => dir.makeTextPath(c.name, contents)).toThrow();
        // The message carries Nix's own wording.
        const nixReason = String(c.error).replace(/^error: store path '[^']*' /, '');
        expect(() => dir.makeTextPath(c.name, contents)).toThrow(nixReason.replace(/'\\xc3'/, "'ü'").trim());
      }
    });
  }
});

describe('text paths (text-paths.json)', () => {
  for (const c of texts.cases) {
    it(`${c.id} ${c.name} in ${c.store_dir}`, () => {
      const dir = new StoreDir(c.store_dir);
      const refs = (c.references as string[]).map((r) => dir.parse(r));
      const p = dir.makeTextPath(c.name, Hash.of('sha256', Buffer.from(c.contents, 'utf8')), refs);
      expect(dir.print(p)).toBe(c.path);
    });
  }
});

describe('parsing store paths', () => {
  const dir = new StoreDir();
  it('rejects paths outside the store dir, nested paths and bad hash parts', () => {
    expect(() => dir.parse('/tmp/aaaa')).toThrow(/not in '\/nix\/store'/);
    expect(() => dir.parse('/nix/store/9gz0m5kka3amb4g3263rlxx9j5518j5z-hello.txt/x')).toThrow(/top-level/);
    expect(() => dir.parse('/nix/store/egz0m5kka3amb4g3263rlxx9j5518j5z-hello.txt')).toThrow(/nix32/);
    expect(() => dir.parse('/nix/store/9gz0m5kka3amb4g3263rlxx9j5518j5z')).toThrow(/hash>-<name/);
    expect(() => new StoreDir('relative')).toThrow();
  });
  it('maps a path inside a store object to the object', () => {
    expect(dir.toStorePath('/nix/store/9gz0m5kka3amb4g3263rlxx9j5518j5z-hello.txt/bin/x').baseName).toBe('9gz0m5kka3amb4g3263rlxx9j5518j5z-hello.txt');
  });
  it('round-trips base names', () => {
    const p = StorePath.fromBaseName('9gz0m5kka3amb4g3263rlxx9j5518j5z-hello.txt');
    expect(p.hashPart).toBe('9gz0m5kka3amb4g3263rlxx9j5518j5z');
    expect(p.name).toBe('hello.txt');
    expect(dir.print(p)).toBe('/nix/store/9gz0m5kka3amb4g3263rlxx9j5518j5z-hello.txt');
  });
});
