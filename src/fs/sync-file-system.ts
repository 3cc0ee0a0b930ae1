/**
 * syncfs(2): writes back everything dirty on the file system holding a directory. Through the
 * small addon in native/ (Node has fsync but no syncfs), run on libuv's thread pool, so the
 * caller can keep working while the kernel writes.
 */
import { closeSync, constants as C, openSync } from 'node:fs';

export async function syncFileSystem(dir: string): Promise<void> {
  // Loaded on first use: every store command imports this module, few of them sync.
  const { syncfs } = await import('strata-native');
  const fd = openSync(dir, C.O_RDONLY | C.O_DIRECTORY);
  try {
    await syncfs(fd);
  } finally {
    closeSync(fd);
  }
}
