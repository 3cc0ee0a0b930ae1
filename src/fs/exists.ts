import { lstatSync } from 'node:fs';

/**
 * Whether anything is at `path`, without following a final symlink (a dangling link, a whiteout
 * or a store object all count), unlike `existsSync`.
 */
export function lexists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
