/** Fixtures for layered-store tests: lower stores with small closures, hashed to prove they never change. */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { Hash } from '../../src/core/hash.js';
import { encodeNar } from '../../src/core/nar/writer.js';

import type { StorePath } from '../../src/core/store-path.js';
import type { LocalStore } from '../../src/store/local/local-store.js';
import { openStore } from '../../src/store/open.js';

export interface LowerFixture {
  root: string;
  /** A small closure: top → mid → leaf, plus a lone `dummy`. */
  paths: { leaf: StorePath; mid: StorePath; top: StorePath; dummy: StorePath };
}

/** Makes a lower store at `root` with a three-path closure and one lone path. */
export async function makeLower(root: string, seed = 'lower'): Promise<LowerFixture> {
  const store = (await openStore(root)) as LocalStore;
  try {
    const dir = store.storeDir;
    const leaf = (await store.addText(`${seed}-leaf`, `leaf of ${seed}\n`, [])).path;
    const mid = (await store.addText(`${seed}-mid`, `mid uses ${dir.print(leaf)}\n`, [leaf])).path;
    const top = (await store.addText(`${seed}-top`, `top uses ${dir.print(mid)}\n`, [mid])).path;
    const dummy = (await store.addText('dummy', 'dummy contents\n', [])).path;
    return { root, paths: { leaf, mid, top, dummy } };
  } finally {
    await store.close();
  }
}

/** A digest of every file, link, mode and byte under `dir` (to prove a lower was not touched). */
export function hashTree(dir: string): string {
  const h = createHash('sha256');
  const walk = (p: string, rel: string): void => {
    const st = lstatSync(p);
    h.update(`${rel}\0${st.mode}\0${st.isFile() ? st.size : 0}\0${Math.floor(st.mtimeMs)}\0`);
    if (st.isDirectory()) for (const e of readdirSync(p).sort()) walk(join(p, e), `${rel}/${e}`);
    else if (st.isSymbolicLink()) h.update(readlinkSync(p));
    else if (st.isFile()) h.update(readFileSync(p));
  };
  walk(dir, '');
  return h.digest('hex');
}

/** Registers an input-addressed path (a build's output: its name says nothing of its bytes) in a store. */
export async function addBuilt(root: string, path: string, text: string, references: StorePath[] = []): Promise<StorePath> {
  const s = (await openStore(root)) as LocalStore;
  try {
    const chunks: Buffer[] = [];
    for await (const c of encodeNar({ type: 'regular', executable: false, size: text.length, contents: [Buffer.from(text)] })) chunks.push(Buffer.from(c));
    const nar = Buffer.concat(chunks);
    const info = { path: s.storeDir.parse(path), narHash: Hash.of('sha256', nar), narSize: nar.length, references, ultimate: true, sigs: [] };
    await s.addFromNar(info, Readable.from([nar]));
    return info.path;
  } finally {
    await s.close();
  }
}
