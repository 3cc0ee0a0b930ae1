/**
 * Fuzzing the text parsers (issue 8 §5): narinfo, `.drv` ATerm, store URI, store paths,
 * content addresses, public keys and (once environments land) env spec files. Each gets
 * mutated valid inputs (the shared vectors where they exist) plus format-token insertions; the
 * only outcomes allowed are success (and then print∘parse is stable) or a StrataError with that
 * parser's stable code and a one-line message.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { parseContentAddress, printContentAddress } from '../../src/core/content-address.js';
import { parseDerivation, printDerivation } from '../../src/core/derivation/aterm.js';
import { StrataError } from '../../src/core/error.js';
import { parseNarInfo, printNarInfo } from '../../src/core/narinfo.js';
import { parsePublicKey, parseTrustedPublicKeys } from '../../src/core/signature.js';
import { StoreDir } from '../../src/core/store-path.js';
import { parseStoreUri } from '../../src/store/uri.js';
import { ROOT } from '../support/cli.js';
import { loadVector } from '../support/vectors.js';
import { mutated } from './_mutate.js';
import { SEED, TIMEOUT, count, record } from './_torture.js';

const enc = (s: string): Buffer => Buffer.from(s, 'utf8');
const storeDir = new StoreDir();

/** Runs `fn`; a throw must be a StrataError with one of `codes` and a one-line message. Returns true on success. */
function outcome(codes: readonly string[], fn: () => void): boolean {
  try {
    fn();
    return true;
  } catch (e) {
    if (!(e instanceof StrataError))
      throw new Error(`not a StrataError: ${String(e)}`, { cause: e });
    if (!codes.includes(e.code))
      throw new Error(`unexpected code ${e.code}: ${e.message}`, { cause: e });
    if (e.message.includes('\n'))
      throw new Error(`multi-line message: ${JSON.stringify(e.message)}`, { cause: e });
    return false;
  }
}

interface Target {
  name: string;
  ci: number;
  full: number;
  corpus: Buffer[];
  tokens: string[];
  run: (input: Buffer) => void;
}

const narinfoCorpus = [
  ...Object.values(
    loadVector('binary-cache.json').caches as Record<string, { narinfos: Array<{ text: string }> }>,
  ).flatMap((c) => c.narinfos.map((n) => enc(n.text))),
  enc(
    'StorePath: /nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple\nURL: nar/x.nar\nCompression: none\nNarHash: sha256-VJD0ujzcxv1jk0TtJzMWOM4GOagiVd0+IGxpNlpEkUw=\nNarSize: 120\nReferences: 94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple\nSystem: x86_64-linux\nCA: fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n',
  ),
];
const drvCorpus = (loadVector('derivations.json').cases as Array<{ drv_aterm: string }>).map((c) =>
  enc(c.drv_aterm),
);
const uriCorpus = [
  'local',
  'auto',
  '/tmp/store',
  'local?root=/tmp/x&read-only=true',
  'file:///tmp/cache?compression=xz&secret-key=/k',
  'http://127.0.0.1:8080/cache?priority=40',
  'https://cache.nixos.org',
  's3://my-bucket?region=eu-west-1',
  'local-overlay://?root=/m&lower-store=/l%3Fread-only%3Dtrue&upper-layer=/u&check-mount=false',
  'layered:///srv/layers?read-only=1',
].map(enc);
const pathCorpus = [
  '/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple',
  '/nix/store/3ghsl9sd83mc26i81adpa2fzf3yw4f68-simple.drv',
  '/nix/store/10d3jkw88mfhh2nhls90r05szdgxckyp-.hidden',
].map(enc);
const caCorpus = [
  'fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s',
  'text:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s',
  'fixed:md5:d41d8cd98f00b204e9800998ecf8427e',
  'fixed:sha1:2jmj7l5rSw0yVb/vlWAYkK/YBwk=',
].map(enc);
const keyCorpus = [
  loadVector('binary-cache.json').public_key as string,
  'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=',
].map(enc);

const targets: Target[] = [
  {
    name: 'narinfo parser',
    ci: 1_500,
    full: 200_000,
    corpus: narinfoCorpus,
    tokens: [
      'StorePath: ',
      'URL: ',
      'Compression: ',
      'FileHash: sha256:',
      'FileSize: ',
      'NarHash: sha256:',
      'NarSize: ',
      'References: ',
      'Deriver: ',
      'Sig: ',
      'CA: ',
      'System: ',
      '\n',
      '\r\n',
      ': ',
      '/nix/store/',
      '../',
      'sha256-',
      'fixed:r:sha256:',
      'text:sha256:',
      'unknown-deriver',
      '18446744073709551616',
      '0',
      'x'.repeat(70_000),
    ],
    run: (b) =>
      void outcome(['NARINFO_INVALID'], () => {
        const info = parseNarInfo(b.length % 2 ? b : b.toString('utf8'));
        const text = printNarInfo(info);
        expect(printNarInfo(parseNarInfo(text))).toBe(text);
      }),
  },
  {
    name: 'ATerm (.drv) parser',
    ci: 1_500,
    full: 250_000,
    corpus: drvCorpus,
    tokens: [
      '"',
      '\\',
      '\\n',
      '\\x',
      '\\"',
      '(',
      ')',
      '[',
      ']',
      ',',
      '","',
      'Derive(',
      'Derive([',
      '/nix/store/',
      '.drv',
      'r:sha256',
      'sha256',
      'out',
      '("out","","","")',
      '\0',
      '\u{1F600}',
      '\uFFFD',
    ],
    run: (b) =>
      void outcome(['DRV_INVALID', 'NAME_INVALID', 'PATH_INVALID'], () => {
        const drv = parseDerivation(
          storeDir,
          b.length % 2 ? b : b.toString('utf8'),
          b.length % 3 ? undefined : 'fuzz',
        );
        const text = printDerivation(storeDir, drv);
        expect(printDerivation(storeDir, parseDerivation(storeDir, text, drv.name))).toBe(text);
      }),
  },
  {
    name: 'store URI parser',
    ci: 1_500,
    full: 150_000,
    corpus: uriCorpus,
    tokens: [
      '?',
      '&',
      '=',
      '%',
      '%2F',
      '%00',
      '%zz',
      '://',
      '/',
      '..',
      'local',
      'file',
      'http',
      'https',
      's3',
      'layered',
      'local-overlay',
      'root=',
      'lower-store=',
      'upper-layer=',
      'read-only=',
      '\0',
      ' ',
      '__proto__',
      'constructor',
    ],
    run: (b) =>
      void outcome(['URI_INVALID'], () => {
        const u = parseStoreUri(b.toString('utf8'));
        if ('root' in u && u.root !== undefined) expect(u.root.startsWith('/')).toBe(true);
        if ('path' in u) expect(u.path.includes('\0')).toBe(false);
      }),
  },
  {
    name: 'store path parser',
    ci: 800,
    full: 50_000,
    corpus: pathCorpus,
    tokens: ['/', '/nix/store/', '-', '.drv', '..', '.', 'e', 'u', 'o', 't', '\0', '?', '='],
    run: (b) =>
      void outcome(['PATH_INVALID', 'NAME_INVALID'], () => {
        const p = storeDir.parse(b.toString('utf8'));
        expect(storeDir.print(p)).toBe(b.toString('utf8'));
      }),
  },
  {
    name: 'content-address parser',
    ci: 800,
    full: 50_000,
    corpus: caCorpus,
    tokens: ['fixed:', 'r:', 'text:', 'sha256:', 'sha512:', 'md5:', 'git:', ':', '=', '-'],
    run: (b) =>
      void outcome(['CA_INVALID'], () => {
        const ca = parseContentAddress(b.toString('utf8'));
        const again = parseContentAddress(printContentAddress(ca));
        expect(again.method).toBe(ca.method);
        expect(again.hash.equals(ca.hash)).toBe(true);
      }),
  },
  {
    name: 'public key parser',
    ci: 800,
    full: 50_000,
    corpus: keyCorpus,
    tokens: [':', '=', ' ', '\n', '\t', '+', '/', '-'],
    run: (b) => {
      void outcome(['KEY_INVALID'], () => void parsePublicKey(b.toString('utf8')));
      void outcome(['KEY_INVALID'], () => void parseTrustedPublicKeys(b.toString('utf8')));
    },
  },
];

describe('torture: text parser fuzzing', { timeout: TIMEOUT }, () => {
  for (const t of targets) {
    it(`the ${t.name} either succeeds or throws its typed error`, () => {
      const runs = count(t.ci, t.full);
      let inputs = 0;
      fc.assert(
        fc.property(mutated(t.corpus, t.tokens.map(enc)), (b) => {
          inputs++;
          t.run(b);
        }),
        { numRuns: runs, seed: SEED },
      );
      record(`fuzz: ${t.name}`, { inputs });
    });
  }

  // Environment specs are being added by another engineer; fuzz them once the module exists.
  const specModule = join(ROOT, 'src', 'env', 'spec.ts');
  it.skipIf(!existsSync(specModule))(
    'the env spec parser (Nix, JSON and TOML forms) either succeeds or throws SPEC_INVALID',
    async () => {
      const { parseSpec } = (await import(specModule)) as {
        parseSpec: (
          text: string,
          file: string,
          format?: 'nix' | 'json' | 'toml',
        ) => Promise<unknown>;
      };
      const store = '/nix/store/94f9f6i31zwzwbf0kclq1naqxxi4c7v9-simple';
      const corpus = {
        nix: [
          `{ pkgs }: {\n  deps = [ pkgs.hello pkgs.python3Packages.requests "${store}" "${store}.drv!out,dev" ];\n}\n`,
          '{ pkgs, ... }: { deps = [ /* c */ pkgs.a # x\n ]; }',
        ],
        json: [`{"deps": ["hello", "pkgs.gnumake", "${store}"]}`, '["a", "b.c"]'],
        toml: [`deps = ["hello", "${store}"]\n`, '# c\ndeps = [\n  "a",\n  "pkgs.b",\n]\n'],
      };
      const tokens = [
        '{',
        '}',
        '[',
        ']',
        '(',
        ')',
        '"',
        "'",
        '\\',
        '${',
        '#',
        '/*',
        '*/',
        '\n',
        ',',
        ';',
        ':',
        '=',
        'pkgs.',
        'deps',
        'with',
        'let',
        'rec',
        'inherit',
        '...',
        '/nix/store/',
        '!',
        '\u00e9',
        '\uFFFD',
        '[[',
        ']]',
        'true',
        'null',
        '1e999',
        '\\u0000',
      ];
      const runs = count(1_200, 150_000);
      let inputs = 0;
      const formats = ['nix', 'json', 'toml'] as const;
      await fc.assert(
        fc.asyncProperty(
          fc
            .constantFrom(...formats)
            .chain((f) => fc.tuple(fc.constant(f), mutated(corpus[f].map(enc), tokens.map(enc)))),
          async ([format, b]) => {
            inputs++;
            try {
              await parseSpec(b.toString('utf8'), `fuzz.${format}`, format);
            } catch (e) {
              if (!(e instanceof StrataError))
                throw new Error(`not a StrataError: ${String(e)}`, { cause: e });
              if (e.code !== 'SPEC_INVALID')
                throw new Error(`unexpected code ${e.code}: ${e.message}`, { cause: e });
              if (e.message.includes('\n'))
                throw new Error(`multi-line message: ${JSON.stringify(e.message)}`, { cause: e });
            }
          },
        ),
        { numRuns: runs, seed: SEED },
      );
      record('fuzz: env spec parser', { inputs });
    },
  );
});
