import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';

import { beforeAll, describe, expect, it } from 'vitest';

import { isStrataError } from '../../src/core/error.js';
import { Hash, parseHash } from '../../src/core/hash.js';
import { parseNarInfo, printNarInfo } from '../../src/core/narinfo.js';
import {
  countValidSignatures,
  fingerprintPathInfo,
  formatPublicKey,
  formatSecretKey,
  generateKeyPair,
  isTrusted,
  parsePublicKey,
  parseSecretKey,
  parseTrustedPublicKeys,
  PublicKey,
  type SecretKey,
  signFingerprint,
  signPathInfo,
  verifySignature,
} from '../../src/core/signature.js';
import { StoreDir, StorePath } from '../../src/core/store-path.js';
import { haveNix, runNix } from '../support/nix.js';
import { tempDir } from '../support/tmp.js';
import { loadVector } from '../support/vectors.js';

const keyFormat = loadVector('key-format.json');
const cacheVectors = loadVector('binary-cache.json');
const storeDir = new StoreDir();

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(isStrataError(e), String(e)).toBe(true);
    return (e as { code: string }).code;
  }
  throw new Error('expected a StrataError');
}

describe('key file formats (key-format.json, from nix-store --generate-binary-cache-key)', () => {
  it('parses the secret and public files and prints them back byte for byte', () => {
    const sk = parseSecretKey(keyFormat.secret_file);
    const pk = parsePublicKey(keyFormat.public_file);
    expect(sk.name).toBe('example-key-1');
    expect(pk.name).toBe('example-key-1');
    expect(formatSecretKey(sk)).toBe(keyFormat.secret_file);
    expect(formatPublicKey(pk)).toBe(keyFormat.public_file);
    expect(sk.exportBytes().length).toBe(keyFormat.secret_len_bytes);
    expect(pk.key.length).toBe(keyFormat.public_len_bytes);
    // The secret's tail is the public key, and it is what the seed derives.
    expect(keyFormat.secret_tail_equals_public).toBe(true);
    expect(formatPublicKey(sk.publicKey)).toBe(keyFormat.public_file);
  });

  it('the fixed test keys of binary-cache.json round-trip too', () => {
    const sk = parseSecretKey(cacheVectors.secret_key);
    expect(formatSecretKey(sk)).toBe(cacheVectors.secret_key);
    expect(formatPublicKey(sk.publicKey)).toBe(cacheVectors.public_key);
    expect(parsePublicKey(cacheVectors.public_key).toString()).toBe(cacheVectors.public_key);
  });

  it('accepts one trailing newline, as Nix does, and prints without it', () => {
    expect(formatSecretKey(parseSecretKey(`${keyFormat.secret_file}\n`))).toBe(
      keyFormat.secret_file,
    );
    expect(formatPublicKey(parsePublicKey(`${keyFormat.public_file}\n`))).toBe(
      keyFormat.public_file,
    );
  });

  const secret = keyFormat.secret_file as string;
  const [sName, sB64] = secret.split(':') as [string, string];
  const sBytes = Buffer.from(sB64, 'base64');
  const badSecrets: Array<[string, string]> = [
    ['no colon', sB64],
    ['empty name', `:${sB64}`],
    ['a space in the name', `my key:${sB64}`],
    ['empty key', `${sName}:`],
    ['not base64', `${sName}:${sB64.replace(/[A-Z]/, '!')}`],
    ['32 bytes only', `${sName}:${sBytes.subarray(0, 32).toString('base64')}`],
    ['65 bytes', `${sName}:${Buffer.concat([sBytes, Buffer.from([0])]).toString('base64')}`],
    [
      'non-canonical base64 padding bits',
      `${sName}:${sB64.slice(0, -3)}${sB64.at(-3) === 'g' ? 'h' : 'g'}==`,
    ],
    ['missing padding', `${sName}:${sB64.replace(/=+$/, '')}`],
    ['two trailing newlines', `${secret}\n\n`],
    ['CRLF', `${secret}\r\n`],
    ['leading space', ` ${secret}`],
    [
      'a public half that does not match the seed',
      `${sName}:${Buffer.concat([sBytes.subarray(0, 32), Buffer.alloc(32, 1)]).toString('base64')}`,
    ],
    ['a public key given as secret', keyFormat.public_file],
  ];
  for (const [name, text] of badSecrets) {
    it(`rejects a secret key with ${name}, without showing key material`, () => {
      try {
        parseSecretKey(text);
        expect.unreachable();
      } catch (e) {
        expect(isStrataError(e, 'KEY_INVALID')).toBe(true);
        const msg = (e as Error).message;
        expect(msg).not.toContain(sB64.slice(0, 20));
        expect(msg).not.toContain(sB64.slice(-24, -4));
        expect(msg).not.toMatch(/\n/);
      }
    });
  }

  const pub = keyFormat.public_file as string;
  const [pName, pB64] = pub.split(':') as [string, string];
  const badPublics: Array<[string, string]> = [
    ['no colon', pB64],
    ['empty name', `:${pB64}`],
    ['whitespace in the name', `a\tb:${pB64}`],
    ['a secret key', secret],
    ['31 bytes', `${pName}:${Buffer.from(pB64, 'base64').subarray(0, 31).toString('base64')}`],
    ['bad base64', `${pName}:${pB64.slice(0, -2)}!=`],
    ['trailing space', `${pub} `],
  ];
  for (const [name, text] of badPublics) {
    it(`rejects a public key with ${name}`, () => {
      expect(codeOf(() => parsePublicKey(text))).toBe('KEY_INVALID');
    });
  }
});

describe('secret keys are never printed', () => {
  it('String(), JSON and inspect show only the name', () => {
    const sk = parseSecretKey(keyFormat.secret_file);
    const b64 = keyFormat.secret_file.split(':')[1] as string;
    for (const shown of [
      String(sk),
      `${sk}`,
      JSON.stringify(sk),
      inspect(sk),
      inspect({ nested: { sk } }, { depth: 5 }),
    ]) {
      expect(shown).toContain('example-key-1');
      expect(shown).not.toContain(b64.slice(0, 16));
      expect(shown).not.toContain(b64.slice(43, 59)); // the public half is not shown either
    }
  });
});

describe('generate, sign, verify', () => {
  it('a generated pair formats, parses back, signs and verifies', () => {
    const { secretKey, publicKey } = generateKeyPair('strata-test-1');
    const skText = formatSecretKey(secretKey);
    const pkText = formatPublicKey(publicKey);
    expect(skText).toMatch(/^strata-test-1:[A-Za-z0-9+/]{86}==$/);
    expect(pkText).toMatch(/^strata-test-1:[A-Za-z0-9+/]{43}=$/);
    expect(skText.endsWith('\n')).toBe(false);
    const sk = parseSecretKey(skText);
    const pk = parsePublicKey(pkText);
    const sig = signFingerprint('1;/nix/store/x;sha256:y;1;', sk);
    expect(sig.startsWith('strata-test-1:')).toBe(true);
    expect(Buffer.from(sig.split(':')[1]!, 'base64').length).toBe(64);
    expect(verifySignature('1;/nix/store/x;sha256:y;1;', sig, [pk])).toBe(true);
    expect(verifySignature('1;/nix/store/x;sha256:y;2;', sig, [pk])).toBe(false);
    // ed25519 is deterministic.
    expect(signFingerprint('1;/nix/store/x;sha256:y;1;', secretKey)).toBe(sig);
  });

  it("two generated pairs differ, and one key does not verify the other's signatures", () => {
    const a = generateKeyPair('k');
    const b = generateKeyPair('k');
    expect(formatPublicKey(a.publicKey)).not.toBe(formatPublicKey(b.publicKey));
    const sig = signFingerprint('fp', a.secretKey);
    expect(verifySignature('fp', sig, [b.publicKey])).toBe(false);
    expect(verifySignature('fp', sig, [a.publicKey])).toBe(true);
  });

  it('rejects bad key names', () => {
    for (const name of ['', 'a b', 'a:b', 'x\n'])
      expect(codeOf(() => generateKeyPair(name))).toBe('KEY_INVALID');
  });

  it('signatures by untrusted key names, and malformed ones, are ignored', () => {
    const { secretKey, publicKey } = generateKeyPair('good-1');
    const sig = signFingerprint('fp', secretKey);
    const body = sig.split(':')[1]!;
    // Same key bytes under another name: not trusted, because Nix matches by name.
    expect(verifySignature('fp', `other-1:${body}`, [publicKey])).toBe(false);
    expect(
      verifySignature('fp', `other-1:${body}`, [new PublicKey('other-1', publicKey.key)]),
    ).toBe(true);
    for (const bad of [
      '',
      'good-1',
      'good-1:',
      ':abc',
      `good-1:${body.slice(4)}`,
      `good-1:${body}AAAA`,
      'good-1:!!!!',
    ]) {
      expect(verifySignature('fp', bad, [publicKey])).toBe(false);
    }
  });

  it('caches the imported KeyObject', () => {
    const { secretKey, publicKey } = generateKeyPair('cache-1');
    expect(publicKey.keyObject).toBe(publicKey.keyObject);
    expect(secretKey.keyObject).toBe(secretKey.keyObject);
  });
});

describe('trusted-public-keys', () => {
  it('splits on whitespace; the first key of a name wins, as in Nix', () => {
    const a = generateKeyPair('a-1').publicKey;
    const b = generateKeyPair('b-1').publicKey;
    const a2 = generateKeyPair('a-1').publicKey;
    const map = parseTrustedPublicKeys(`  ${a}\n${b}\t${a2} `);
    expect([...map.keys()]).toEqual(['a-1', 'b-1']);
    expect(map.get('a-1')!.toString()).toBe(a.toString());
    expect(parseTrustedPublicKeys('').size).toBe(0);
    expect(codeOf(() => parseTrustedPublicKeys(`${a} garbage`))).toBe('KEY_INVALID');
  });
});

describe('fingerprints and path signatures', () => {
  const sk = parseSecretKey(cacheVectors.secret_key);
  const pk = parsePublicKey(cacheVectors.public_key);
  const refsNi = parseNarInfo(
    cacheVectors.caches.none.narinfos.find(
      (n: { fields: { References: string } }) => n.fields.References.split(' ').length === 3,
    ).text,
  );

  it('lists full reference paths, sorted and deduplicated, comma-separated', () => {
    const fp = fingerprintPathInfo(storeDir, {
      ...refsNi,
      references: [...refsNi.references, refsNi.references[0]!].reverse(),
    });
    const refs = fp.split(';')[4]!.split(',');
    expect(refs.length).toBe(3);
    expect(refs).toEqual([...refs].sort());
    expect(refs.every((r) => r.startsWith('/nix/store/'))).toBe(true);
    expect(fp).toBe(fingerprintPathInfo(storeDir, refsNi));
  });

  it('needs a known NAR size and a sha256 NAR hash', () => {
    expect(codeOf(() => fingerprintPathInfo(storeDir, { ...refsNi, narSize: 0 }))).toBe(
      'FINGERPRINT_INVALID',
    );
    expect(
      codeOf(() => fingerprintPathInfo(storeDir, { ...refsNi, narHash: Hash.of('sha512', '') })),
    ).toBe('FINGERPRINT_INVALID');
  });

  it('counts each distinct valid signature once; isTrusted needs one', () => {
    const other = generateKeyPair('other-1');
    const twice = signPathInfo(
      storeDir,
      signPathInfo(storeDir, { ...refsNi, sigs: [] }, sk),
      other.secretKey,
    );
    expect(twice.sigs.length).toBe(2);
    expect(countValidSignatures(storeDir, twice, [pk])).toBe(1);
    expect(countValidSignatures(storeDir, twice, [pk, other.publicKey])).toBe(2);
    expect(
      countValidSignatures(storeDir, { ...twice, sigs: [...twice.sigs, ...twice.sigs] }, [
        pk,
        other.publicKey,
      ]),
    ).toBe(2);
    expect(isTrusted(storeDir, twice, [])).toBe(false);
    expect(isTrusted(storeDir, twice, [other.publicKey])).toBe(true);
    expect(isTrusted(storeDir, { ...twice, sigs: [] }, [pk, other.publicKey])).toBe(false);
  });
});

// Real Nix 2.8 as the oracle (formats.md §1): a private NIX_CONF_DIR with require-sigs = true,
// chroot stores under a temp dir, never the machine's /nix.
describe('real Nix 2.8 accepts strata keys and signatures, and strata accepts Nix keys', () => {
  beforeAll(() => {
    expect(haveNix(), 'real Nix (nix-bin) must be installed for the interop tests').toBe(true);
  });

  /** A file:// cache holding the vector paths, with narinfos printed by strata and signed by `key`. */
  function writeCache(dir: string, key: SecretKey | undefined): void {
    mkdirSync(join(dir, 'nar'), { recursive: true });
    writeFileSync(join(dir, 'nix-cache-info'), cacheVectors.caches.xz.nix_cache_info);
    for (const ni of cacheVectors.caches.xz.narinfos) {
      let info = { ...parseNarInfo(ni.text), sigs: [] as string[] };
      if (key) info = signPathInfo(storeDir, info, key);
      writeFileSync(join(dir, ni.file), printNarInfo(info));
      writeFileSync(join(dir, ni.nar_file), Buffer.from(ni.nar_file_b64, 'base64'));
    }
  }

  // `refs` is input-addressed (no CA), so only signatures can make Nix trust it.
  const target = '/nix/store/bvmy6gdl00l6c1bh6qavnzpnwcac4xlq-refs';

  it('keys from strata key generation: nix copy substitutes, nix store verify accepts, a wrong key is refused', () => {
    const dir = tempDir();
    const { secretKey, publicKey } = generateKeyPair('strata-made-1');
    writeFileSync(join(dir, 'sk'), formatSecretKey(secretKey), { mode: 0o600 });
    writeFileSync(join(dir, 'pk'), formatPublicKey(publicKey));
    writeCache(join(dir, 'cache'), secretKey);
    const pk = readFileSync(join(dir, 'pk'), 'utf8');
    const wrong = formatPublicKey(generateKeyPair('strata-made-1').publicKey);

    const refused = runNix('nix', [
      'copy',
      '--from',
      `file://${dir}/cache`,
      '--to',
      join(dir, 'refused'),
      '--option',
      'trusted-public-keys',
      wrong,
      target,
    ]);
    expect(refused.code, refused.stderr).not.toBe(0);
    expect(refused.stderr).toMatch(/not signed by any of the keys|lacks a valid signature/);

    const copy = runNix('nix', [
      'copy',
      '--from',
      `file://${dir}/cache`,
      '--to',
      join(dir, 'st'),
      '--option',
      'trusted-public-keys',
      pk,
      target,
    ]);
    expect(copy.code, copy.stderr).toBe(0);

    const verify = runNix('nix', [
      'store',
      'verify',
      '--store',
      join(dir, 'st'),
      '--trusted-public-keys',
      pk,
      '-r',
      target,
    ]);
    expect(verify.code, verify.stderr).toBe(0);
    const verifyWrong = runNix('nix', [
      'store',
      'verify',
      '--store',
      join(dir, 'st'),
      '--trusted-public-keys',
      wrong,
      target,
    ]);
    expect(verifyWrong.code).not.toBe(0);
    expect(verifyWrong.stderr).toContain('untrusted');

    const info = JSON.parse(
      runNix('nix', ['path-info', '--store', join(dir, 'st'), '--json', target]).stdout,
    ) as Array<{ signatures: string[] }>;
    const ours = parseNarInfo(
      readFileSync(join(dir, 'cache', 'bvmy6gdl00l6c1bh6qavnzpnwcac4xlq.narinfo'), 'utf8'),
    );
    expect(info[0]!.signatures).toEqual(ours.sigs);
  });

  it('keys from nix-store --generate-binary-cache-key: strata parses them, and signs exactly as nix store sign', () => {
    const dir = tempDir();
    const gen = runNix('nix-store', [
      '--generate-binary-cache-key',
      'nix-made-1',
      join(dir, 'sk'),
      join(dir, 'pk'),
    ]);
    expect(gen.code, gen.stderr).toBe(0);
    const sk = parseSecretKey(readFileSync(join(dir, 'sk'), 'utf8'));
    const pk = parsePublicKey(readFileSync(join(dir, 'pk'), 'utf8'));
    expect(formatSecretKey(sk)).toBe(readFileSync(join(dir, 'sk'), 'utf8'));
    expect(formatPublicKey(sk.publicKey)).toBe(formatPublicKey(pk));

    // Put an unsigned copy of the vector closure into a chroot store, then let Nix sign it.
    writeCache(join(dir, 'cache'), undefined);
    const copy = runNix('nix', [
      'copy',
      '--from',
      `file://${dir}/cache`,
      '--to',
      join(dir, 'st'),
      '--option',
      'require-sigs',
      'false',
      target,
    ]);
    expect(copy.code, copy.stderr).toBe(0);
    const sign = runNix('nix', [
      'store',
      'sign',
      '--store',
      join(dir, 'st'),
      '--key-file',
      join(dir, 'sk'),
      '-r',
      target,
    ]);
    expect(sign.code, sign.stderr).toBe(0);

    const infos = JSON.parse(
      runNix('nix', ['path-info', '--store', join(dir, 'st'), '--json', '-r', target]).stdout,
    ) as Array<{
      path: string;
      narHash: string;
      narSize: number;
      references: string[];
      signatures: string[];
    }>;
    expect(infos.length).toBe(3);
    for (const i of infos) {
      const info = {
        path: storeDir.parse(i.path),
        narHash: parseHash(i.narHash),
        narSize: i.narSize,
        references: i.references.map((r) => storeDir.parse(r)),
      };
      const fp = fingerprintPathInfo(storeDir, info);
      expect(i.signatures.length).toBe(1);
      expect(verifySignature(fp, i.signatures[0]!, [pk])).toBe(true);
      expect(signFingerprint(fp, sk)).toBe(i.signatures[0]);
    }
    // The path Nix signed is trusted by strata under the Nix key, and only under it.
    const refs = infos.find((i) => i.path === target)!;
    const asInfo = {
      path: StorePath.fromBaseName(target.slice('/nix/store/'.length)),
      narHash: parseNarInfo(
        cacheVectors.caches.xz.narinfos.find((n: { file: string }) => n.file.startsWith('bvmy'))
          .text,
      ).narHash,
      narSize: refs.narSize,
      references: refs.references.map((r) => storeDir.parse(r)),
      ultimate: false,
      sigs: refs.signatures,
    };
    expect(isTrusted(storeDir, asInfo, [pk])).toBe(true);
    expect(isTrusted(storeDir, asInfo, [generateKeyPair('nix-made-1').publicKey])).toBe(false);
  });
});
