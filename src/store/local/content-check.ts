/**
 * Checks a declared content address before a path becomes valid: the address must give the very
 * store path being added (name, references and self-reference included; core/content-address),
 * and the staged files must hash to it — for a self-referencing path, modulo its own hash part,
 * as `make-content-addressed` computed it.
 */
import { StrataError } from '../../core/error.js';
import { checkContentAddress as checkPathOfContentAddress, HashModuloSink, parseContentAddress } from '../../core/content-address.js';
import { Hash } from '../../core/hash.js';
import { flatFileContents } from '../../core/nar/format.js';
import type { StoreDir } from '../../core/store-path.js';
import { dumpPath } from '../../fs/nar-dump.js';
import { hashFile, hashPath } from '../../fs/hash-path.js';
import type { PathInfo } from '../store.js';

/**
 * `narSha256`, when given, is the sha256 of the staged tree's NAR, already computed while it was
 * restored: for the commonest address, `fixed:r:sha256` without a self-reference, that *is* the
 * content hash, so the tree is not read and hashed a second time (on a 300-path substitution of
 * such paths the second hash was a quarter of the client's CPU time; BENCHMARKS.md "S3").
 * `nar`, when given, is the NAR the tree was restored from, still in memory: a flat or text
 * address is then hashed from the file's bytes in it rather than read back from disk (on a
 * 300-path substitution of text paths, reading them back was half the time spent staging).
 */
export async function checkContentAddress(storeDir: StoreDir, info: PathInfo, staged: string, narSha256?: Hash, nar?: Uint8Array): Promise<void> {
  const full = storeDir.print(info.path);
  const ca = parseContentAddress(info.ca!);
  checkPathOfContentAddress(storeDir, info.path, ca, info.references);
  const self = info.references.some((r) => r.equals(info.path));
  let got;
  const flat = ca.method !== 'recursive' && nar !== undefined ? flatFileContents(nar) : undefined;
  if (flat !== undefined) got = Hash.of(ca.hash.algo, flat);
  else if (ca.method !== 'recursive') got = await hashFile(staged, ca.hash.algo);
  else if (!self && narSha256 !== undefined && ca.hash.algo === 'sha256') got = narSha256;
  else if (!self) got = (await hashPath(staged, ca.hash.algo)).hash;
  else {
    const sink = new HashModuloSink(info.path.hashPart);
    for await (const chunk of dumpPath(staged)) sink.update(chunk as Buffer);
    got = sink.finish().hash;
  }
  if (!got.equals(ca.hash)) {
    throw new StrataError('CA_MISMATCH', `Cannot add '${full}': content hash mismatch, declared ${ca.hash.toString('nix32')}, got ${got.toString('nix32')}`, { value: full });
  }
}
