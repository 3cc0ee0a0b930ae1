/** Opens the command's store, runs the body, and always closes the store. */
import { lstatSync, readlinkSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

import type { Command } from 'commander';

import type { Store } from '../store/store.js';
import { globalOptions, storeUri, trustedKeys } from './global.js';

export async function withStore<T>(cmd: Command, body: (store: Store) => Promise<T>, uri: string = storeUri(cmd)): Promise<T> {
  const { openStore } = await import('../store/open.js');
  const g = globalOptions(cmd);
  const store = await openStore(uri, { trustedPublicKeys: trustedKeys(g), requireSigs: g.requireSigs });
  try {
    return await body(store);
  } finally {
    await store.close();
  }
}

/**
 * Parses a user-given path: a store path, a path inside one, or (as Nix's followLinksToStorePath
 * takes it) a path relative to the working directory and symlinks to follow into the store, such
 * as a `./result` link.
 */
export function parsePathArg(store: Store, arg: string) {
  const dir = store.storeDir.path;
  let path = resolve(arg);
  for (let hops = 0; !path.startsWith(`${dir}/`) && hops < 40; hops++) {
    let target: string;
    try {
      if (!lstatSync(path).isSymbolicLink()) break;
      target = readlinkSync(path);
    } catch {
      break;
    }
    path = resolve(dirname(path), target);
  }
  return store.storeDir.toStorePath(path);
}
