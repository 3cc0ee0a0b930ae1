/**
 * Hashing file system objects the way Nix does: `hashPath` hashes the NAR serialisation
 * (`nix hash path`, the NAR hash of a store object), `hashFile` the plain bytes of a file
 * (`nix hash file`, flat content addresses).
 */
import { close, constants as C, lstatSync, open, read } from 'node:fs';

import { type Hash, type HashAlgo, newHasher } from '../core/hash.js';
import { NarWriter } from '../core/nar/writer.js';
import { hashWalkDirectory } from './_nar-hash-walk.js';
import { CHUNK_SIZE, newWalk, walkAt } from './_nar-walk.js';

/**
 * Hashes the NAR of `fsPath` without materialising it, returning the hash and the NAR size.
 * With sha256 this is the store object's NAR hash.
 *
 * @example
 * ```ts
 * const { hash, narSize } = await hashPath('/tmp/tree');
 * hash.toSri(); // 'sha256-…', what `nix hash path /tmp/tree` prints
 * ```
 */
export async function hashPath(fsPath: string, algo: HashAlgo = 'sha256'): Promise<{ hash: Hash; narSize: number }> {
  const hasher = newHasher(algo);
  let narSize = 0;
  const writer = new NarWriter(
    (chunk) => {
      hasher.update(chunk);
      narSize += chunk.length;
    },
    { reuseBatch: true },
  );
  const path = Buffer.from(fsPath);
  const stats = lstatSync(path);
  // A directory's small files are read in batches, on a helper thread when a core is spare.
  if (stats.isDirectory()) await hashWalkDirectory(path, writer);
  else await walkAt(newWalk(writer, { reuseBuffers: true }), path, stats);
  writer.end();
  return { hash: hasher.digest(), narSize };
}

const readP = (fd: number, buf: Buffer): Promise<number> =>
  new Promise((res, rej) => read(fd, buf, 0, buf.length, null, (e, n) => (e ? rej(e) : res(n))));

/**
 * Hashes the bytes of a regular file (following symlinks, like `nix hash file`). Reads 1 MiB
 * chunks with the next read in flight while the current one is hashed.
 *
 * @example
 * ```ts
 * (await hashFile('/tmp/hello.txt', 'sha256')).toBase16();
 * ```
 */
export async function hashFile(fsPath: string, algo: HashAlgo = 'sha256'): Promise<Hash> {
  const fd = await new Promise<number>((res, rej) => open(fsPath, C.O_RDONLY, (e, f) => (e ? rej(e) : res(f))));
  try {
    const hasher = newHasher(algo);
    const bufs = [Buffer.allocUnsafe(CHUNK_SIZE), Buffer.allocUnsafe(CHUNK_SIZE)];
    let flip = 0;
    let pending = readP(fd, bufs[0]!);
    for (;;) {
      const buf = bufs[flip & 1]!;
      const n = await pending;
      if (n === 0) break;
      flip++;
      pending = readP(fd, bufs[flip & 1]!);
      hasher.update(n === buf.length ? buf : buf.subarray(0, n));
    }
    return hasher.digest();
  } finally {
    await new Promise<void>((res) => close(fd, () => res()));
  }
}
