/**
 * Repair: put back the files of a registered path from the first substituter whose NAR matches
 * the recorded hash and size (content checked, so no signature is needed). The row is kept.
 */
import type { StorePath } from '../core/store-path.js';
import type { LocalStore } from './local/local-store.js';

export async function repairFromSubstituters(store: LocalStore, substituters: string[], path: StorePath): Promise<boolean> {
  const info = await store.queryPathInfo(path);
  if (!info) return false;
  const { openStore } = await import('./open.js');
  for (const uri of substituters) {
    const source = await openStore(uri);
    try {
      const theirs = await source.queryPathInfo(path);
      if (!theirs || !theirs.narHash.equals(info.narHash)) continue;
      await store.restoreFiles(info, await source.narFromPath(path));
      return true;
    } catch {
      continue; // A broken substituter is not fatal: try the next one.
    } finally {
      await source.close();
    }
  }
  return false;
}
