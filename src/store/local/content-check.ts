/**
 * Checks a declared content address before a path becomes valid: the address must give the very
 * store path being added (name, references and self-reference included; core/content-address),
 * and the staged files must hash to it — for a self-referencing path, modulo its own hash part,
 * as `make-content-addressed` computed it.
 */
import { StrataError } from '../../core/error.js';
import { checkContentAddress as checkPathOfContentAddress, type ContentAddressMethod, HashModuloSink, parseContentAddress } from '../../core/content-address.js';
import { Hash, type HashAlgo } from '../../core/hash.js';
import { flatFileContents } from '../../core/nar/format.js';
import type { StoreDir } from '../../core/store-path.js';
import { dumpPath } from '../../fs/nar-dump.js';
import { hashFile, hashPath } from '../../fs/hash-path.js';
import type { PathInfo } from '../store.js';

/** What is known of a staged tree besides its files (see {@link checkContentAddress}). */
export interface ContentCheckInputs {
  narSha256?: Hash | undefined;
  nar?: Uint8Array | undefined;
  beforeReading?: (() => Promise<void>) | undefined;
}

/**
 * `narSha256`, when given, is the sha256 of the staged tree's NAR, already computed while it was
 * restored: for the commonest address, `fixed:r:sha256` without a self-reference, that *is* the
 * content hash, so the tree is not read and hashed a second time (on a 300-path substitution of
 * such paths the second hash was a quarter of the client's CPU time; BENCHMARKS.md "S3").
 * `nar`, when given, is the NAR the tree was restored from, still in memory: a flat or text
 * address is then hashed from the file's bytes in it rather than read back from disk (on a
 * 300-path substitution of text paths, reading them back was half the time spent staging).
 * `beforeReading` is awaited before the staged tree is read, and only then: a restore whose
 * nodes are still being made on the thread pool settles there, and the checks that need only
 * the NAR do not wait for it (waiting for each path's nodes made the main thread and the pool
 * take turns, one path at a time).
 */
export async function checkContentAddress(
  storeDir: StoreDir,
  info: PathInfo,
  staged: string,
  { narSha256, nar, beforeReading }: ContentCheckInputs = {},
): Promise<void> {
  const full = storeDir.print(info.path);
  const ca = parseContentAddress(info.ca!);
  checkPathOfContentAddress(storeDir, info.path, ca, info.references);
  const self = info.references.some((r) => r.equals(info.path));
  let got;
  const flat = ca.method !== 'recursive' && nar !== undefined ? flatFileContents(nar) : undefined;
  if (flat !== undefined) got = Hash.of(ca.hash.algo, flat);
  else if (!self && ca.method === 'recursive' && narSha256 !== undefined && ca.hash.algo === 'sha256') got = narSha256;
  else {
    await beforeReading?.();
    got = await hashStaged(staged, ca.method, ca.hash.algo, self ? info.path.hashPart : undefined);
  }
  if (!got.equals(ca.hash)) {
    throw new StrataError('CA_MISMATCH', `Cannot add '${full}': content hash mismatch, declared ${ca.hash.toString('nix32')}, got ${got.toString('nix32')}`, { value: full });
  }
}

/** The content hash of a staged tree read back from disk; `selfHashPart` for a self-referencing path. */
async function hashStaged(staged: string, method: ContentAddressMethod, algo: HashAlgo, selfHashPart: string | undefined): Promise<Hash> {
  if (method !== 'recursive') return hashFile(staged, algo);
  if (selfHashPart === undefined) return (await hashPath(staged, algo)).hash;
  const sink = new HashModuloSink(selfHashPart);
  for await (const chunk of dumpPath(staged)) sink.update(chunk as Buffer);
  return sink.finish().hash;
}
