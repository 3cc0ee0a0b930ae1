/**
 * Checks a declared content address before a path becomes valid: the address must give the very
 * store path being added (name, references and self-reference included), and the staged files
 * must hash to it.
 */
import { StrataError } from '../../core/error.js';
import { type HashAlgo, isHashAlgo, parseHash } from '../../core/hash.js';
import type { StoreDir } from '../../core/store-path.js';
import { hashFile, hashPath } from '../../fs/hash-path.js';
import type { PathInfo } from '../store.js';

export async function checkContentAddress(storeDir: StoreDir, info: PathInfo, staged: string): Promise<void> {
  const full = storeDir.print(info.path);
  const fail = (why: string) => new StrataError('CA_MISMATCH', `Cannot add '${full}': ${why}`, { value: full });
  const ca = info.ca!;
  const m = /^(text|fixed):(r:)?([a-z0-9]+):(.+)$/.exec(ca);
  if (!m || !isHashAlgo(m[3]!) || (m[1] === 'text' && (m[2] || m[3] !== 'sha256'))) throw fail(`its content address '${ca}' is malformed`);
  const algo = m[3] as HashAlgo;
  const hash = parseHash(`${algo}:${m[4]}`);
  const self = info.references.some((r) => r.equals(info.path));
  const others = info.references.filter((r) => !r.equals(info.path));
  let expected;
  try {
    expected = m[1] === 'text' ? storeDir.makeTextPath(info.path.name, hash, others) : storeDir.makeFixedOutputPath(info.path.name, hash, m[2] !== undefined, others, self);
  } catch (e) {
    throw fail(`its content address '${ca}' does not fit its references (${(e as Error).message})`);
  }
  if (m[1] === 'text' && self) throw fail('a text path cannot refer to itself');
  if (!expected.equals(info.path)) throw fail(`its content address '${ca}' gives the path '${storeDir.print(expected)}'`);
  // A self-referencing path is hashed modulo its own hash part: the path check above is what
  // binds it; re-hashing the staged copy would need the rewrite (see core/content-address).
  if (self) return;
  const got = m[1] === 'text' || m[2] === undefined ? await hashFile(staged, algo) : (await hashPath(staged, algo)).hash;
  if (!got.equals(hash)) throw fail(`content hash mismatch, declared ${hash.toString('nix32')}, got ${got.toString('nix32')}`);
}
