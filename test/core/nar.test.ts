import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { isStrataError } from '../../src/core/error.js';
import { Hash, type HashAlgo } from '../../src/core/hash.js';
import { flatFileContents, MAX_DEPTH, type NarEntry, type NarEvent, str, u64 } from '../../src/core/nar/format.js';
import { NarParser, parseNar } from '../../src/core/nar/parser.js';
import { encodeNar, NarWriter } from '../../src/core/nar/writer.js';
import { StoreDir } from '../../src/core/store-path.js';
import { loadVector } from '../support/vectors.js';

const nar = loadVector('nar.json');
const restore = loadVector('nar-restore.json');
const ALGOS: HashAlgo[] = ['md5', 'sha1', 'sha256', 'sha512'];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function fromRecipe(r: any): NarEntry {
  if (r.type === 'symlink') return { type: 'symlink', target: Buffer.from(r.target, 'utf8') };
  if (r.type === 'regular') {
    const bytes = Buffer.from(r.contents_b64, 'base64');
    return { type: 'regular', executable: r.executable, size: bytes.length, contents: [bytes] };
  }
  return { type: 'directory', entries: Object.entries(r.entries).map(([n, e]) => [Buffer.from(n, 'utf8'), fromRecipe(e)] as const) };
}

async function collect(src: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const c of src) out.push(Buffer.from(c));
  return Buffer.concat(out);
}

/** Parses `bytes` fed in pieces of `step` bytes and re-encodes the events. */
function reencode(bytes: Uint8Array, step: number): Buffer {
  const out: Uint8Array[] = [];
  const w = new NarWriter((c) => out.push(Buffer.from(c)));
  const p = new NarParser();
  for (let i = 0; i < bytes.length; i += step) for (const ev of p.feed(bytes.subarray(i, i + step))) w.write(ev);
  p.end();
  w.end();
  return Buffer.concat(out);
}

/** Parses the whole of `bytes`; returns the error (or undefined when it parsed). */
function parseError(bytes: Uint8Array, step = bytes.length || 1): Error | undefined {
  try {
    const p = new NarParser();
    for (let i = 0; i < bytes.length; i += step) for (const _ of p.feed(bytes.subarray(i, i + step)));
    p.end();
    return undefined;
  } catch (e) {
    return e as Error;
  }
}

function expectInvalid(bytes: Uint8Array, message: RegExp): void {
  const e = parseError(bytes);
  expect(e, 'should be rejected').toBeDefined();
  expect(isStrataError(e, 'NAR_INVALID')).toBe(true);
  expect(e!.message).toMatch(message);
  expect(e!.message).toMatch(/ at byte \d+$/);
  expect(e!.message).not.toContain('\n');
}

// Hand-made NAR pieces, with no checks at all, to build hostile archives.
const s = (x: string | Uint8Array): Buffer => str(x);
const MAGIC = s('nix-archive-1');
const reg = (contents: string, exec = false): Buffer =>
  Buffer.concat([s('('), s('type'), s('regular'), ...(exec ? [s('executable'), s('')] : []), s('contents'), s(contents), s(')')]);
const sym = (target: string | Uint8Array): Buffer => Buffer.concat([s('('), s('type'), s('symlink'), s('target'), s(target), s(')')]);
const dir = (...entries: Array<[string | Uint8Array, Buffer]>): Buffer =>
  Buffer.concat([s('('), s('type'), s('directory'), ...entries.flatMap(([n, node]) => [s('entry'), s('('), s('name'), s(n), s('node'), node, s(')')]), s(')')]);
const archive = (node: Buffer): Buffer => Buffer.concat([MAGIC, node]);

describe('NAR encoding of every nar.json tree (real Nix 2.8)', () => {
  for (const c of nar.cases) {
    const bytes = Buffer.from(c.nar_b64, 'base64');
    it(`encodeNar() gives nix-store --dump's bytes for ${c.name}`, async () => {
      const ours = await collect(encodeNar(fromRecipe(c.root)));
      expect(ours.length).toBe(c.nar_size);
      expect(ours.equals(bytes)).toBe(true);
      for (const algo of ALGOS) expect(Hash.of(algo, ours).toBase16()).toBe(c.nix_hash_path[algo]);
      expect(Hash.of('sha256', ours).toNix32()).toBe(c.nix_hash_path.sha256_nix32);
      expect(Hash.of('sha256', ours).toSri()).toBe(c.nix_hash_path.sha256_sri);
    });
    it(`parse then write gives the same bytes for ${c.name}, whatever the chunking`, () => {
      for (const step of [1, 3, 8, 13, 64, 4096, bytes.length]) expect(reencode(bytes, step).equals(bytes)).toBe(true);
    });
    it(`store paths of ${c.name} match nix-store --add / --add-fixed / nix store add-file`, () => {
      const dirs = new StoreDir();
      expect(dirs.print(dirs.makeFixedOutputPath(c.name, Hash.of('sha256', bytes), true))).toBe(c.nix_store_add);
      for (const algo of ALGOS) {
        expect(dirs.print(dirs.makeFixedOutputPath(c.name, Hash.of(algo, bytes), true))).toBe(c.add_fixed_recursive[algo]);
      }
      if (c.add_fixed_flat) {
        const contents = Buffer.from(c.root.contents_b64, 'base64');
        for (const algo of ALGOS) {
          expect(Hash.of(algo, contents).toBase16()).toBe(c.flat_hashes_hex[algo]);
          expect(dirs.print(dirs.makeFixedOutputPath(c.name, Hash.of(algo, contents), false))).toBe(c.add_fixed_flat[algo]);
        }
        expect(dirs.print(dirs.makeFixedOutputPath(c.name, Hash.of('sha256', contents), false))).toBe(c.nix_store_add_file);
      }
    });
  }
  it('parseNar() streams file contents in pieces, never more than was fed', async () => {
    const bytes = Buffer.from(nar.cases[0].nar_b64, 'base64');
    const pieces = Array.from({ length: Math.ceil(bytes.length / 5) }, (_, i) => bytes.subarray(i * 5, i * 5 + 5));
    const events: NarEvent[] = [];
    await parseNar(pieces, async (ev) => {
      if (ev.type === 'contents') expect(ev.chunk.length).toBeLessThanOrEqual(5);
      events.push(ev);
    });
    expect(events[0]).toEqual({ type: 'directory' });
    expect(events.at(-1)).toEqual({ type: 'directoryEnd' });
    expect(events.filter((e) => e.type === 'entry').length).toBe(10);
  });
});

/** What real `nix-store --restore` 2.8 accepts but we reject on purpose. */
const STRICTER_THAN_NIX: Record<string, string> = {
  'unsorted-entries': "2.8's order check is ineffective (it resets the previous name per entry); an unsorted NAR is not canonical, so its hash would not be the hash of what it restores to",
};

describe('flatFileContents: the file a NAR of one regular file holds, read in place', () => {
  it('gives the contents of every nar.json case that is a regular file (real Nix 2.8), and nothing for the others', () => {
    let files = 0;
    for (const c of nar.cases) {
      const got = flatFileContents(Buffer.from(c.nar_b64, 'base64'));
      if (c.root.type === 'regular') {
        files++;
        expect(Buffer.from(got!).equals(Buffer.from(c.root.contents_b64, 'base64')), c.name).toBe(true);
      } else expect(got, c.name).toBeUndefined();
    }
    expect(files).toBeGreaterThan(0);
  });

  it('reads executable files and empty ones, and refuses truncated, padded-wrong or trailing bytes', async () => {
    for (const [executable, body] of [[true, 'run me\n'], [false, ''], [false, '12345678']] as const) {
      const bytes = Buffer.from(body);
      const archive = await collect(encodeNar({ type: 'regular', executable, size: bytes.length, contents: [bytes] }));
      expect(Buffer.from(flatFileContents(archive)!).toString()).toBe(body);
      expect(flatFileContents(archive.subarray(0, archive.length - 1))).toBeUndefined();
      expect(flatFileContents(Buffer.concat([archive, Buffer.alloc(8)]))).toBeUndefined();
    }
    const odd = await collect(encodeNar({ type: 'regular', executable: false, size: 3, contents: [Buffer.from('abc')] }));
    const badPad = Buffer.from(odd);
    badPad[badPad.length - 17] = 1; // a padding byte after 'abc'
    expect(flatFileContents(badPad)).toBeUndefined();
    expect(flatFileContents(await collect(encodeNar({ type: 'symlink', target: Buffer.from('x') })))).toBeUndefined();
  });
});

describe('nar-restore.json: what nix-store --restore 2.8 accepts', () => {
  for (const c of restore.cases) {
    const bytes = Buffer.from(c.nar_b64, 'base64');
    const weReject = !c.accepted_by_nix_store_restore || c.name in STRICTER_THAN_NIX;
    it(`${c.name}: Nix ${c.accepted_by_nix_store_restore ? 'accepts' : 'rejects'}, we ${weReject ? 'reject' : 'accept'}`, () => {
      const e = parseError(bytes);
      if (weReject) {
        expect(isStrataError(e, 'NAR_INVALID')).toBe(true);
        // One chunk per byte must fail the same way.
        expect(parseError(bytes, 1)?.message).toBe(e!.message);
      } else {
        expect(e).toBeUndefined();
        expect(Hash.of('sha256', reencode(bytes, 7)).toBase16()).toBe(c.redump_sha256_hex);
      }
    });
  }
  it('trailing bytes after the root node: Nix 2.8 accepts them (formats.md §4), we reject them as not canonical', () => {
    const good = Buffer.from(nar.cases[1].nar_b64, 'base64');
    expectInvalid(Buffer.concat([good, Buffer.alloc(8)]), /8 trailing bytes after the archive at byte 120/);
    expectInvalid(Buffer.concat([good, Buffer.from('x')]), /trailing bytes/);
    expect(parseError(Buffer.concat([good, Buffer.alloc(1)]), 1)?.message).toMatch(/trailing/);
  });
});

describe('hostile and malformed archives', () => {
  it('rejects bad names: empty, ., .., /, NUL, over 255 bytes', () => {
    expectInvalid(archive(dir(['', reg('x')])), /empty name/);
    expectInvalid(archive(dir(['.', reg('x')])), /name '\.'/);
    expectInvalid(archive(dir(['..', reg('x')])), /name '\.\.'/);
    expectInvalid(archive(dir(['../../etc/passwd', reg('x')])), /contains '\/'/);
    expectInvalid(archive(dir(['a/b', reg('x')])), /contains '\/'/);
    expectInvalid(archive(dir(['/abs', reg('x')])), /contains '\/'/);
    expectInvalid(archive(dir([Buffer.from('a\0b'), reg('x')])), /NUL/);
    expectInvalid(archive(dir(['x'.repeat(256), reg('x')])), /name length 256 exceeds 255/);
    expect(parseError(archive(dir(['x'.repeat(255), reg('x')])))).toBeUndefined();
  });
  it('rejects duplicates, including a symlink and a directory of the same name (write-through)', () => {
    expectInvalid(archive(dir(['a', reg('1')], ['a', reg('2')])), /duplicate entry "a"/);
    expectInvalid(archive(dir(['a', sym('/tmp/x')], ['a', dir(['evil', reg('pwned')])])), /duplicate entry "a"/);
    expectInvalid(archive(dir(['b', reg('1')], ['a', reg('2')])), /"a" is not sorted after "b"/);
  });
  it('rejects absurd lengths (2^63, 2^53) before reading them', () => {
    const huge = (n: bigint): Buffer => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(n);
      return b;
    };
    const fileWith = (len: Buffer): Buffer => Buffer.concat([MAGIC, s('('), s('type'), s('regular'), s('contents'), len]);
    expectInvalid(fileWith(huge(2n ** 63n)), /file length 9223372036854775808 exceeds 9007199254740991/);
    expectInvalid(fileWith(huge(2n ** 53n)), /file length 9007199254740992 exceeds/);
    expectInvalid(Buffer.concat([MAGIC, s('('), s('type'), s('directory'), s('entry'), s('('), s('name'), huge(2n ** 63n)]), /name length .* exceeds 255/);
    expectInvalid(Buffer.concat([MAGIC, huge(2n ** 63n)]), /tag length .* exceeds 16/);
    expectInvalid(Buffer.concat([MAGIC, s('('), s('type'), s('symlink'), s('target'), huge(4096n)]), /symlink target length 4096 exceeds 4095/);
    // A 2^53 - 1 length is accepted as a length; the archive is then merely truncated.
    expectInvalid(fileWith(huge(2n ** 53n - 1n)), /unexpected end of archive/);
  });
  it('rejects bad symlink targets: empty, NUL', () => {
    expectInvalid(archive(sym('')), /empty symlink target/);
    expectInvalid(archive(sym(Buffer.from('a\0b'))), /NUL/);
  });
  it('rejects unknown tags, node types and non-canonical field order', () => {
    expectInvalid(archive(Buffer.concat([s('('), s('type'), s('fifo'), s(')')])), /unknown node type "fifo"/);
    expectInvalid(archive(Buffer.concat([s('('), s('kind'), s('regular')])), /expected 'type'/);
    expectInvalid(archive(Buffer.concat([s('('), s('type'), s('regular'), s(')')])), /expected 'contents'/);
    expectInvalid(archive(Buffer.concat([s('('), s('type'), s('regular'), s('contents'), s('x'), s('executable'), s('')])), /expected '\)'/);
    expectInvalid(archive(Buffer.concat([s('('), s('type'), s('regular'), s('executable'), s('yes'), s('contents'), s('x'), s(')')])), /executable marker has a non-empty value/);
    expectInvalid(archive(Buffer.concat([s('('), s('type'), s('directory'), s('junk')])), /expected 'entry' or '\)'/);
  });
  it('rejects non-zero padding in tags, names and contents', () => {
    const good = archive(reg('abc'));
    const contentsPad = good.indexOf(Buffer.from('abc')) + 3;
    const bad = Buffer.from(good);
    bad[contentsPad] = 1;
    expectInvalid(bad, new RegExp(`non-zero padding at byte ${contentsPad}`));
    const named = archive(dir(['abc', reg('')]));
    const namePad = named.indexOf(Buffer.from('abc')) + 4;
    const bad2 = Buffer.from(named);
    bad2[namePad] = 0xff;
    expectInvalid(bad2, new RegExp(`non-zero padding at byte ${namePad}`));
  });
  it('rejects truncation at every offset of a NAR, fed whole or byte by byte', () => {
    const bytes = Buffer.from(nar.cases[0].nar_b64, 'base64');
    for (let cut = 0; cut < bytes.length; cut++) {
      const e = parseError(bytes.subarray(0, cut));
      expect(isStrataError(e, 'NAR_INVALID'), `cut at ${cut}`).toBe(true);
      if (cut >= 24) expect(e!.message).toBe(`Cannot parse NAR: unexpected end of archive at byte ${cut}`);
    }
    expect(parseError(bytes.subarray(0, 1000), 1)?.message).toBe('Cannot parse NAR: unexpected end of archive at byte 1000');
  });
  it(`accepts ${MAX_DEPTH} nested directories and rejects ${MAX_DEPTH + 1}`, () => {
    const nest = (n: number): Buffer => (n === 0 ? reg('x') : dir(['d', nest(n - 1)]));
    expect(parseError(archive(nest(MAX_DEPTH)))).toBeUndefined();
    expectInvalid(archive(nest(MAX_DEPTH + 1)), /nested deeper than 256/);
  });
  it('rejects a bad magic and a parser used after a failure', () => {
    expectInvalid(Buffer.concat([s('nix-archive-2'), reg('x')]), /bad magic/);
    expectInvalid(Buffer.alloc(64), /bad magic/);
    const p = new NarParser();
    expect(() => [...p.feed(Buffer.alloc(24))]).toThrow(/bad magic/);
    expect(() => [...p.feed(Buffer.alloc(1))]).toThrow(/bad magic/);
  });
});

describe('NarWriter refuses to write a non-canonical NAR', () => {
  const w = (): NarWriter => new NarWriter(() => {});
  it('asserts byte order and uniqueness of entries', () => {
    const a = w();
    a.directory();
    a.entry(Buffer.from('b'));
    a.symlink(Buffer.from('t'));
    expect(() => a.entry(Buffer.from('B'))).toThrow(/not sorted/);
    const b = w();
    b.directory();
    b.entry(Buffer.from('a'));
    b.symlink(Buffer.from('t'));
    expect(() => b.entry(Buffer.from('a'))).toThrow(/duplicate/);
  });
  it('asserts sizes, names and the event grammar', () => {
    const a = w();
    a.regular(false, 3);
    expect(() => a.contents(Buffer.from('abcd'))).toThrow(/exceed the declared size/);
    const b = w();
    b.regular(false, 3);
    b.contents(Buffer.from('ab'));
    expect(() => b.regularEnd()).toThrow(/1 bytes short/);
    const c = w();
    c.directory();
    expect(() => c.entry(Buffer.from('..'))).toThrow(/'\.\.'/);
    expect(() => w().end()).toThrow(/incomplete/);
    expect(() => w().entry(Buffer.from('x'))).toThrow(/entry outside a directory/);
    const d = w();
    d.symlink(Buffer.from('x'));
    expect(() => d.directory()).toThrow(/unexpected directory/);
  });
  it('framedEntries() passes framed entries through, checking their place and order', () => {
    // The entries a/ b as NarWriter frames them, cut out of its own output.
    const full: Uint8Array[] = [];
    const ref = new NarWriter((c) => void full.push(Buffer.from(c)));
    ref.directory();
    for (const n of ['a', 'b']) {
      ref.entry(Buffer.from(n));
      ref.regular(n === 'b', 3);
      ref.contents(Buffer.from('xyz'));
      ref.regularEnd();
    }
    ref.directoryEnd();
    ref.end();
    const bytes = Buffer.concat(full);
    const head = ['nix-archive-1', '(', 'type', 'directory'].reduce((n, t) => n + str(t).length, 0);
    const framed = bytes.subarray(head, bytes.length - 16);
    const out: Uint8Array[] = [];
    const a = new NarWriter((c) => void out.push(Buffer.from(c)));
    a.directory();
    a.framedEntries(framed, Buffer.from('a'), Buffer.from('b'));
    expect(() => a.entry(Buffer.from('b'))).toThrow(/duplicate/);
    a.entry(Buffer.from('c'));
    a.symlink(Buffer.from('t'));
    expect(() => a.framedEntries(framed, Buffer.from('a'), Buffer.from('b'))).toThrow(/not sorted/);
    expect(() => a.framedEntries(framed.subarray(4), Buffer.from('d'), Buffer.from('e'))).toThrow(/multiple of 8/);
    expect(() => w().framedEntries(framed, Buffer.from('a'), Buffer.from('b'))).toThrow(/entry outside a directory/);
    const b = new NarWriter((c) => void out.push(Buffer.from(c)));
    b.directory();
    expect(() => b.framedEntries(framed, Buffer.from('b'), Buffer.from('a'))).toThrow(/not sorted/);
    const c: Uint8Array[] = [];
    const d = new NarWriter((x) => void c.push(Buffer.from(x)));
    d.directory();
    d.framedEntries(framed, Buffer.from('a'), Buffer.from('b'));
    d.directoryEnd();
    d.end();
    expect(Buffer.concat(c).equals(bytes)).toBe(true);
  });
  it('encodeNar() sorts entries given in any order and rejects duplicates', async () => {
    const e = (n: string): [Uint8Array, NarEntry] => [Buffer.from(n), { type: 'symlink', target: Buffer.from('t') }];
    const sorted = await collect(encodeNar({ type: 'directory', entries: [e('a'), e('B'), e('_')] }));
    const reversed = await collect(encodeNar({ type: 'directory', entries: [e('_'), e('a'), e('B')] }));
    expect(sorted.equals(reversed)).toBe(true);
    await expect(collect(encodeNar({ type: 'directory', entries: [e('a'), e('a')] }))).rejects.toThrow(/duplicate/);
  });
  it('u64() and str() frame as Nix does', () => {
    expect(u64(2 ** 40 + 5).toString('hex')).toBe('0500000000010000');
    expect(str('').toString('hex')).toBe('0000000000000000');
    expect(str('(').toString('hex')).toBe('01000000000000002800000000000000');
  });
});

/** Random trees: names are arbitrary valid byte strings, contents arbitrary bytes. */
const narEntryArb: fc.Arbitrary<NarEntry> = fc.letrec<{ node: NarEntry }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.record({ type: fc.constant('regular' as const), executable: fc.boolean(), bytes: fc.uint8Array({ maxLength: 200 }) }).map(
      ({ executable, bytes }): NarEntry => ({ type: 'regular', executable, size: bytes.length, contents: [Buffer.from(bytes)] }),
    ),
    fc.uint8Array({ minLength: 1, maxLength: 40 }).filter((t) => !t.includes(0)).map((t): NarEntry => ({ type: 'symlink', target: Buffer.from(t) })),
    fc
      .uniqueArray(fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 12 }).filter((n) => !n.includes(0) && !n.includes(0x2f) && !(n.every((b) => b === 0x2e) && n.length <= 2)), tie('node')), {
        maxLength: 5,
        selector: ([n]) => Buffer.from(n).toString('hex'),
      })
      .map((entries): NarEntry => ({ type: 'directory', entries: entries.map(([n, e]) => [Buffer.from(n), e] as const) })),
  ),
})).node;

describe('property: encode → parse → write is the identity', () => {
  it('holds for random trees and random chunkings', async () => {
    await fc.assert(
      fc.asyncProperty(narEntryArb, fc.integer({ min: 1, max: 97 }), async (entry, step) => {
        const bytes = await collect(encodeNar(entry));
        expect(reencode(bytes, step).equals(bytes)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
  it('a single flipped byte never parses into a different valid NAR of the same length unnoticed', async () => {
    // Either the mutation is rejected, or it parses and re-encodes to exactly the mutated bytes (e.g. a content byte).
    await fc.assert(
      fc.asyncProperty(narEntryArb, fc.nat(), fc.integer({ min: 1, max: 255 }), async (entry, at, x) => {
        const bytes = Buffer.from(await collect(encodeNar(entry)));
        const i = at % bytes.length;
        bytes[i]! ^= x;
        const e = parseError(bytes);
        if (e === undefined) expect(reencode(bytes, 11).equals(bytes)).toBe(true);
        else expect(isStrataError(e, 'NAR_INVALID')).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});
