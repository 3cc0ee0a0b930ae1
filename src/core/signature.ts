/**
 * ed25519 signatures on store paths, in Nix's formats (`src/libutil/crypto.cc`,
 * `ValidPathInfo::fingerprint` and `checkSignatures` in `src/libstore/path-info.cc`).
 *
 * Key files are one line with no trailing newline: secret `NAME:base64(seed32 ‖ pub32)` (the
 * libsodium layout), public `NAME:base64(pub32)`. A signature is `NAME:base64(sig64)` over the
 * path's fingerprint `1;<path>;<sha256:nix32 NAR hash>;<NAR size>;<refs, comma-separated>`.
 *
 * node:crypto does the maths; raw public keys enter it as JWK (`{kty:'OKP', crv:'Ed25519', x}`),
 * seeds as PKCS#8. Measured here: a key import costs about 10 µs, a signing 48 µs and a check
 * 150 µs, so each key object keeps its imported `KeyObject` instead of paying 7–20% per use.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import { inspect } from 'node:util';

import { StrataError } from './error.js';
import type { StoreDir } from './store-path.js';
import type { PathInfo } from '../store/store.js';

const SEED_BYTES = 32;
const PUBLIC_BYTES = 32;
const SIGNATURE_BYTES = 64;
// A key name is what Nix matches trusted keys by; whitespace would break `trusted-public-keys`.
const NAME_RE = /^[^\s:]+$/;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/** Decodes base64 only when it is canonical (re-encodes to the same text) and of `size` bytes. */
function decodeBase64(s: string, size: number): Uint8Array | undefined {
  if (!BASE64_RE.test(s)) return undefined;
  const bytes = Buffer.from(s, 'base64');
  if (bytes.length !== size || bytes.toString('base64') !== s) return undefined;
  return new Uint8Array(bytes);
}

function checkKeyName(name: string, what: string): void {
  if (!NAME_RE.test(name)) {
    throw new StrataError(
      'KEY_INVALID',
      `Cannot use key name '${JSON.stringify(name).slice(1, -1)}': ${what}`,
      {
        value: name,
      },
    );
  }
}

/** A trusted ed25519 public key, as in `trusted-public-keys` and `.pub` files. */
export class PublicKey {
  /** The name signatures refer to, e.g. `cache.nixos.org-1`. */
  readonly name: string;
  /** The 32 raw key bytes. */
  readonly key: Uint8Array;
  #keyObject: KeyObject | undefined;

  constructor(name: string, key: Uint8Array) {
    checkKeyName(name, 'a key name must be non-empty with no whitespace or colon');
    if (key.length !== PUBLIC_BYTES) {
      throw new StrataError(
        'KEY_INVALID',
        `Cannot use public key '${name}': it has ${key.length} bytes, not ${PUBLIC_BYTES}`,
        {
          value: name,
        },
      );
    }
    this.name = name;
    this.key = new Uint8Array(key);
  }

  /** The node:crypto key, imported on first use. */
  get keyObject(): KeyObject {
    this.#keyObject ??= createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: b64url(this.key) },
      format: 'jwk',
    });
    return this.#keyObject;
  }

  /** `NAME:base64(key)`, the public key file's contents (no newline). */
  toString(): string {
    return `${this.name}:${Buffer.from(this.key).toString('base64')}`;
  }
}

/**
 * An ed25519 secret key. Its bytes never show up in `String()`, `JSON.stringify` or
 * `console.log`: only {@link formatSecretKey} writes them, for the key file.
 */
export class SecretKey {
  /** The name signatures made with it carry. */
  readonly name: string;
  readonly #seed: Uint8Array;
  readonly #publicKey: PublicKey;
  readonly #keyObject: KeyObject;

  /** From a 32-byte seed; the public half is derived from it. */
  constructor(name: string, seed: Uint8Array) {
    checkKeyName(name, 'a key name must be non-empty with no whitespace or colon');
    if (seed.length !== SEED_BYTES) {
      throw new StrataError(
        'KEY_INVALID',
        `Cannot use secret key '${name}': its seed has ${seed.length} bytes, not ${SEED_BYTES}`,
        {
          value: name,
        },
      );
    }
    this.name = name;
    this.#seed = new Uint8Array(seed);
    // PKCS#8 for ed25519 is a fixed 16-byte prefix and the seed (RFC 8410); it yields the public half.
    const pkcs8 = Buffer.concat([
      Buffer.from('302e020100300506032b657004220420', 'hex'),
      this.#seed,
    ]);
    this.#keyObject = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
    const jwk = this.#keyObject.export({ format: 'jwk' });
    this.#publicKey = new PublicKey(name, Buffer.from(jwk.x ?? '', 'base64url'));
  }

  /** The matching public key. */
  get publicKey(): PublicKey {
    return this.#publicKey;
  }

  /** The node:crypto key. */
  get keyObject(): KeyObject {
    return this.#keyObject;
  }

  /** 64 bytes in libsodium's layout: seed then public key. Handle with care. */
  exportBytes(): Uint8Array {
    return new Uint8Array(Buffer.concat([this.#seed, this.#publicKey.key]));
  }

  toString(): string {
    return `SecretKey(${this.name})`;
  }

  toJSON(): { name: string } {
    return { name: this.name };
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

/**
 * Parses a secret key file's contents, `NAME:base64(64 bytes)`. Strict: the name must be
 * non-empty without whitespace, the base64 canonical, the length exactly 64, and the last 32
 * bytes must be the public key of the first 32 (libsodium would otherwise sign with a wrong
 * key). One trailing `\n` is allowed because Nix's base64 decoder skips it too.
 * Throws `KEY_INVALID`; the message never contains key material.
 *
 * @example parseSecretKey(readFileSync('cache.sec', 'utf8')).name // 'my-cache-1'
 */
export function parseSecretKey(text: string): SecretKey {
  const s = text.endsWith('\n') ? text.slice(0, -1) : text;
  const colon = s.indexOf(':');
  const fail = (state: string): StrataError =>
    new StrataError(
      'KEY_INVALID',
      `Cannot parse secret key '${colon > 0 ? s.slice(0, colon) : '<unnamed>'}': ${state}`,
    );
  if (colon <= 0) throw fail("it is not 'NAME:base64'");
  const name = s.slice(0, colon);
  if (!NAME_RE.test(name)) throw fail('the name is empty or has whitespace');
  const bytes = decodeBase64(s.slice(colon + 1), SEED_BYTES + PUBLIC_BYTES);
  if (bytes === undefined)
    throw fail(`the key is not canonical base64 of ${SEED_BYTES + PUBLIC_BYTES} bytes`);
  const key = new SecretKey(name, bytes.subarray(0, SEED_BYTES));
  if (!Buffer.from(key.publicKey.key).equals(bytes.subarray(SEED_BYTES))) {
    throw fail('its public half does not match its seed');
  }
  return key;
}

/**
 * Parses a public key, `NAME:base64(32 bytes)` (a `.pub` file or one `trusted-public-keys`
 * entry); strict as {@link parseSecretKey}. Throws `KEY_INVALID`.
 *
 * @example parsePublicKey('cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=')
 */
export function parsePublicKey(text: string): PublicKey {
  const s = text.endsWith('\n') ? text.slice(0, -1) : text;
  const colon = s.indexOf(':');
  const shown = JSON.stringify(s.length > 80 ? `${s.slice(0, 77)}...` : s).slice(1, -1);
  const fail = (state: string): StrataError =>
    new StrataError('KEY_INVALID', `Cannot parse public key '${shown}': ${state}`, { value: s });
  if (colon <= 0) throw fail("it is not 'NAME:base64'");
  const name = s.slice(0, colon);
  if (!NAME_RE.test(name)) throw fail('the name is empty or has whitespace');
  const bytes = decodeBase64(s.slice(colon + 1), PUBLIC_BYTES);
  if (bytes === undefined) throw fail(`the key is not canonical base64 of ${PUBLIC_BYTES} bytes`);
  return new PublicKey(name, bytes);
}

/** The secret key file's contents, `NAME:base64(seed ‖ public)`, with no trailing newline. */
export function formatSecretKey(key: SecretKey): string {
  return `${key.name}:${Buffer.from(key.exportBytes()).toString('base64')}`;
}

/** The public key file's contents, `NAME:base64(public)`, with no trailing newline. */
export function formatPublicKey(key: PublicKey): string {
  return key.toString();
}

/**
 * A fresh random key pair, like `nix-store --generate-binary-cache-key NAME sec pub`.
 *
 * @example
 * ```ts
 * const { secretKey, publicKey } = generateKeyPair('my-cache-1');
 * writeFileSync('pub', formatPublicKey(publicKey));
 * ```
 */
export function generateKeyPair(name: string): { secretKey: SecretKey; publicKey: PublicKey } {
  checkKeyName(name, 'a key name must be non-empty with no whitespace or colon');
  const { privateKey } = generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  const secretKey = new SecretKey(name, Buffer.from(jwk.d ?? '', 'base64url'));
  return { secretKey, publicKey: secretKey.publicKey };
}

/**
 * Parses the `trusted-public-keys` setting: keys separated by whitespace. Like Nix, the first key
 * of a given name wins (Nix fills a map with `emplace`). Throws `KEY_INVALID` on a bad entry.
 *
 * @example parseTrustedPublicKeys(process.env.TRUSTED ?? '').get('cache.nixos.org-1')
 */
export function parseTrustedPublicKeys(setting: string): Map<string, PublicKey> {
  return trustedKeyMap(
    setting
      .split(/\s+/)
      .filter((s) => s !== '')
      .map(parsePublicKey),
  );
}

/** Trusted keys by name: a map, or a list (the first key of each name wins, as in Nix). */
export type TrustedKeys = ReadonlyMap<string, PublicKey> | Iterable<PublicKey>;

function trustedKeyMap(keys: TrustedKeys): Map<string, PublicKey> {
  if (keys instanceof Map) return keys as Map<string, PublicKey>;
  const map = new Map<string, PublicKey>();
  for (const k of keys as Iterable<PublicKey>) if (!map.has(k.name)) map.set(k.name, k);
  return map;
}

/**
 * The string Nix signs for a path:
 * `1;<full path>;<sha256:nix32 NAR hash>;<NAR size>;<full reference paths, sorted, comma-separated>`.
 * Throws `FINGERPRINT_INVALID` when the NAR size is unknown (0), as Nix does, or the hash is not sha256.
 *
 * @example fingerprintPathInfo(new StoreDir(), info) // '1;/nix/store/…-hello;sha256:…;120;'
 */
export function fingerprintPathInfo(
  storeDir: StoreDir,
  info: Pick<PathInfo, 'path' | 'narHash' | 'narSize' | 'references'>,
): string {
  const path = storeDir.print(info.path);
  if (info.narSize <= 0 || !Number.isSafeInteger(info.narSize)) {
    throw new StrataError(
      'FINGERPRINT_INVALID',
      `Cannot compute the fingerprint of '${path}': its NAR size is not known`,
      { value: path },
    );
  }
  if (info.narHash.algo !== 'sha256') {
    throw new StrataError(
      'FINGERPRINT_INVALID',
      `Cannot compute the fingerprint of '${path}': its NAR hash is not sha256`,
      { value: path },
    );
  }
  const refs = [...new Set(info.references.map((r) => storeDir.print(r)))].sort();
  return `1;${path};${info.narHash.toString('nix32')};${info.narSize};${refs.join(',')}`;
}

/**
 * Signs a fingerprint (any string, as UTF-8) and returns the `NAME:base64(sig)` Sig value.
 * ed25519 is deterministic: the same key and fingerprint always give the same signature.
 */
export function signFingerprint(fingerprint: string, key: SecretKey): string {
  const sig = sign(null, Buffer.from(fingerprint, 'utf8'), key.keyObject);
  return `${key.name}:${sig.toString('base64')}`;
}

/**
 * True when `sig` (`NAME:base64`) is a valid signature of `fingerprint` by the trusted key of
 * that name. A signature by an untrusted key name, or one that is malformed, is simply not valid.
 */
export function verifySignature(
  fingerprint: string,
  sig: string,
  trustedKeys: TrustedKeys,
): boolean {
  const colon = sig.indexOf(':');
  if (colon <= 0) return false;
  const key = trustedKeyMap(trustedKeys).get(sig.slice(0, colon));
  if (key === undefined) return false;
  const bytes = decodeBase64(sig.slice(colon + 1), SIGNATURE_BYTES);
  if (bytes === undefined) return false;
  return verify(null, Buffer.from(fingerprint, 'utf8'), key.keyObject, bytes);
}

/**
 * Signs a path like `nix store sign`: returns a copy of `info` with the new signature added to
 * its `sigs` (deduplicated and sorted, as Nix keeps them in a set).
 *
 * @example const signed = signPathInfo(storeDir, info, parseSecretKey(secretText));
 */
export function signPathInfo<T extends PathInfo>(storeDir: StoreDir, info: T, key: SecretKey): T {
  const sig = signFingerprint(fingerprintPathInfo(storeDir, info), key);
  return { ...info, sigs: [...new Set([...info.sigs, sig])].sort() };
}

/** How many of the path's distinct signatures are valid under the trusted keys. */
export function countValidSignatures(
  storeDir: StoreDir,
  info: PathInfo,
  trustedKeys: TrustedKeys,
): number {
  if (info.sigs.length === 0) return 0;
  const keys = trustedKeyMap(trustedKeys);
  const fingerprint = fingerprintPathInfo(storeDir, info);
  let good = 0;
  for (const sig of new Set(info.sigs)) if (verifySignature(fingerprint, sig, keys)) good++;
  return good;
}

/** Options for {@link isTrusted}. */
export interface TrustOptions {
  /**
   * Whether the path's `ca` really produces its store path (the caller computes the path from
   * the content address, name and references). Nix trusts such a path with no signature at all.
   * Without this hook a CA claim earns nothing, since anyone can write a `CA:` line.
   */
  caIsValid?: ((info: PathInfo) => boolean) | undefined;
}

/**
 * Nix's rule for accepting a path from a substituter with `require-sigs = true`: a valid content
 * address, or at least one valid signature by a trusted key.
 *
 * @example isTrusted(storeDir, narInfoToPathInfo(ni), parseTrustedPublicKeys(setting), { caIsValid })
 */
export function isTrusted(
  storeDir: StoreDir,
  info: PathInfo,
  trustedKeys: TrustedKeys,
  options: TrustOptions = {},
): boolean {
  if (info.ca !== undefined && options.caIsValid?.(info) === true) return true;
  return countValidSignatures(storeDir, info, trustedKeys) > 0;
}
