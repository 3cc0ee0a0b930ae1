/** Opens the command's store, runs the body, and always closes the store. */
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

/** Parses a user-given path (full store path, or a path inside one) in the store's dir. */
export function parsePathArg(store: Store, arg: string) {
  return store.storeDir.toStorePath(arg.startsWith('/') ? arg.replace(/\/+$/, '') : arg);
}
