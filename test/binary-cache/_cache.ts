/** Helpers for binary-cache tests: caches rebuilt from binary-cache.json, stores, key files. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { parseNarInfo } from '../../src/core/narinfo.js';
import type { StorePath } from '../../src/core/store-path.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { loadVector } from '../support/vectors.js';

export const vectors = loadVector('binary-cache.json');
export const PUBLIC_KEY: string = vectors.public_key;
export const SECRET_KEY: string = vectors.secret_key;
export const COMPRESSIONS: string[] = Object.keys(vectors.caches);

export interface VectorNarInfo {
  file: string;
  text: string;
  nar_file: string;
  nar_file_b64: string;
  fingerprint: string;
}

export function narinfosOf(compression: string): VectorNarInfo[] {
  return vectors.caches[compression].narinfos;
}

/** Writes the vector cache of one compression into `dir` exactly as `nix copy` made it. */
export function writeVectorCache(dir: string, compression: string, edit?: (text: string, file: string) => string): void {
  mkdirSync(join(dir, 'nar'), { recursive: true });
  writeFileSync(join(dir, 'nix-cache-info'), vectors.caches[compression].nix_cache_info);
  for (const ni of narinfosOf(compression)) {
    writeFileSync(join(dir, ni.file), edit ? edit(ni.text, ni.file) : ni.text);
    writeFileSync(join(dir, ni.nar_file), Buffer.from(ni.nar_file_b64, 'base64'));
  }
}

/** The raw NAR bytes of a vector path (from the `none` cache). */
export function narOf(path: StorePath): Buffer {
  const ni = narinfosOf('none').find((n) => parseNarInfo(n.text).path.equals(path))!;
  return Buffer.from(ni.nar_file_b64, 'base64');
}

/** Key files in `dir`: `sk` (secret) and `pk` (public). */
export function writeKeys(dir: string): { sk: string; pk: string } {
  const sk = join(dir, 'sk');
  const pk = join(dir, 'pk');
  writeFileSync(sk, SECRET_KEY);
  writeFileSync(pk, PUBLIC_KEY);
  return { sk, pk };
}

/** The target path of the vectors' substitution runs (with one reference). */
export const DEPENDENT = '/nix/store/gl35v4rh9ccxzsbhfbf6rxb68hlm46i9-dependent';

/**
 * Opens the cache at `url` and a fresh destination store in `work` (with a narinfo disk cache of
 * its own there), runs `run` on them, and closes both whatever happens.
 */
export async function withCopyStores(work: string, url: string, run: (cache: Store, local: Store) => Promise<void>): Promise<void> {
  process.env['XDG_CACHE_HOME'] = join(work, 'xdg');
  const cache = await openStore(url);
  const local = await openStore(join(work, 'dst'));
  try {
    await run(cache, local);
  } finally {
    await cache.close();
    await local.close();
  }
}
