/**
 * The signature policy for paths arriving from another store, as Nix applies it in
 * `LocalStore::addToStore` with `require-sigs = true`: a path is accepted when it carries a valid
 * signature by a trusted key, or when its content address really gives its store path.
 */
import { checkContentAddress } from '../core/content-address.js';
import { StrataError } from '../core/error.js';
import { isTrusted, parsePublicKey, type PublicKey, type TrustedKeys } from '../core/signature.js';
import type { StoreDir } from '../core/store-path.js';
import type { PathInfo } from './store.js';

/** Which keys to trust, and whether unsigned paths are refused at all. */
export interface TrustPolicy {
  /** `name:base64` strings or parsed keys. */
  trustedPublicKeys?: TrustedKeys | string[] | undefined;
  /** Refuse paths that are neither signed by a trusted key nor validly content-addressed (default true). */
  requireSigs?: boolean | undefined;
}

/** The policy's keys, parsed (`KEY_INVALID` on a bad one). */
export function trustedKeysOf(policy: TrustPolicy): Map<string, PublicKey> {
  const map = new Map<string, PublicKey>();
  const given = policy.trustedPublicKeys ?? [];
  for (const k of given instanceof Map ? given.values() : (given as Iterable<PublicKey | string>)) {
    const key = typeof k === 'string' ? parsePublicKey(k) : k;
    if (!map.has(key.name)) map.set(key.name, key);
  }
  return map;
}

/** True when `info.ca` is a content address that really yields `info.path`. */
export function caGivesPath(storeDir: StoreDir, info: PathInfo): boolean {
  if (info.ca === undefined) return false;
  try {
    checkContentAddress(storeDir, info.path, info.ca, info.references);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether a path passes the policy. The content itself is checked against the CA later, by the
 * destination store's `addFromNar`, before the path becomes valid.
 *
 * @example acceptable(store.storeDir, info, trustedKeysOf({ trustedPublicKeys: ['k:…'] }), true)
 */
export function acceptable(storeDir: StoreDir, info: PathInfo, keys: TrustedKeys, requireSigs: boolean): boolean {
  if (!requireSigs) return true;
  return isTrusted(storeDir, info, keys, { caIsValid: (i) => caGivesPath(storeDir, i) });
}

/** The error for a path refused by the policy (Nix's words). */
export function untrustedError(storeDir: StoreDir, info: PathInfo, from: string): StrataError {
  const full = storeDir.print(info.path);
  return new StrataError('SIG_UNTRUSTED', `Cannot copy '${full}' from '${from}': it is not signed by any of the keys in 'trusted-public-keys'`, {
    value: full,
    hint: 'pass --trusted-public-keys with the key of the cache, or --no-require-sigs',
  });
}
