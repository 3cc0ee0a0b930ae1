/**
 * Removing a file system object whatever its modes: store objects are read-only (directories
 * 0555), so where rm is refused the directories are made writable before their children go.
 * Names are handled as bytes: a store object's names need not be UTF-8.
 */
import { chmodSync, lstatSync, readdirSync, rmSync } from 'node:fs';

const SLASH = Buffer.from('/');

export function removeTree(path: string | Buffer): void {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw e;
    makeWritable(Buffer.from(path));
    rmSync(path, { recursive: true, force: true });
  }
}

function makeWritable(path: Buffer): void {
  // As root rmSync never needs this; it matters when strata runs as an ordinary user.
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return; // gone meanwhile
  }
  if (!st.isDirectory()) return;
  chmodSync(path, 0o700);
  for (const name of readdirSync(path, { encoding: 'buffer' })) makeWritable(Buffer.concat([path, SLASH, name]));
}
